"""Image formats: which reader reads a path, its header read cheaply, and images written on a scan's grid.

NIfTI (``.nii``, ``.nii.gz``) is read and written with nibabel. NRRD (``.nrrd``, ``.nhdr``),
MetaImage (``.mha``, ``.mhd``) and DICOM series (a folder holding one series' slices) are
read with ITK (the ``formats`` extra): voxels through MONAI's ``ITKReader``, as training
loads them, headers through ITK's ImageIO without the voxels. ITK keeps a grid as spacing,
origin and direction in LPS; MONAI and nibabel use one voxel-to-RAS affine. A ``Header``
has both, so an image written in an ITK format gets the input's spacing, origin and
direction exactly, not as recomputed from an affine.
"""

import dataclasses
import logging
import os
import re
import warnings
from pathlib import Path

import nibabel
import numpy as np
from monai.data import ITKReader, NibabelReader
from monai.utils import OptionalImportError

from unet3d.atomic import atomic_path
from unet3d.errors import UserError, install_hint
from unet3d.image_suffixes import OUTPUT_SUFFIXES, SUFFIXES, image_suffix

NAMES = {"nifti": "NIfTI", "nrrd": "NRRD", "metaimage": "MetaImage", "dicom": "a DICOM series"}
# The format a prediction is written in by the input's format. DICOM inputs give NIfTI: a DICOM
# SEG object needs the source series' UIDs and a segment description.
OUTPUT_FORMAT_OF_INPUT = {"nifti": "nifti", "nrrd": "nrrd", "metaimage": "mha", "dicom": "nifti"}
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS, its own inverse
# MONAI's ITKReader splits a folder into series by these details; pre-flight splits it the same way.
SERIES_DATE = "0008|0021"
# The data file a detached header names: MetaImage's ``ElementDataFile = x.raw``, NRRD's ``data file: x.raw``.
DATA_FILE = re.compile(r"^(?:ElementDataFile\s*=|data ?file:)[ \t]*(\S+)[ \t]*\r?$", re.MULTILINE | re.IGNORECASE)
ITK_DTYPES = {"unsigned_char": "uint8", "char": "int8", "unsigned_short": "uint16", "short": "int16",
              "unsigned_int": "uint32", "int": "int32", "unsigned_long": "uint64", "long": "int64",
              "unsigned_long_long": "uint64", "long_long": "int64", "float": "float32", "double": "float64"}


def image_format(path):
    """``"nifti"``, ``"nrrd"``, ``"metaimage"`` or ``"dicom"`` (a folder); files of other names are left to nibabel."""
    if os.path.isdir(path):
        return "dicom"
    suffix = image_suffix(path)
    return SUFFIXES[suffix] if suffix else "nifti"


def image_files(path):
    """The files an image is read from: a DICOM folder's files; a ``.mhd`` or ``.nhdr`` header and its data file."""
    if os.path.isdir(path):
        return sorted(str(entry) for entry in Path(path).iterdir() if entry.is_file())
    if image_suffix(path) not in (".mhd", ".nhdr"):
        return [str(path)]
    try:
        with open(path, "rb") as stream:
            text = stream.read(16384).decode("latin-1")
    except OSError:
        return [str(path)]
    found = DATA_FILE.search(text)
    data = Path(path).parent / found.group(1) if found else None
    return [str(path)] + ([str(data)] if data is not None and data.is_file() else [])


def output_suffix(input_path, output_format=None):
    """The suffix of a prediction of ``input_path``: ``output_format``'s, else the input format's."""
    return OUTPUT_SUFFIXES[output_format or OUTPUT_FORMAT_OF_INPUT[image_format(input_path)]]


# LoadImage tries its readers in turn and logs each refusal at INFO ("NibabelReader: unable to load x.nrrd" and a
# blank line) before the next reader reads the file; a file no reader reads is still an error.
logging.getLogger("LoadImage").setLevel(logging.WARNING)


def readers():
    """MONAI readers for ``LoadImage``: nibabel is tried first, ITK (where installed) reads what it refuses."""
    try:
        return [ITKReader(), NibabelReader()]
    except OptionalImportError:  # NIfTI needs no ITK; pre-flight names any other file that does
        return [NibabelReader()]


@dataclasses.dataclass(frozen=True, eq=False)
class Header:
    """An image's grid and voxel type, read without its voxels.

    ``shape`` is (X, Y, Z), then the channels of a multi-channel image; ``affine`` maps
    voxels to RAS millimetres; ``voxel_type`` names the voxels (``float32``, ``rgb``);
    ``geometry`` is ITK's ``(spacing, origin, direction)`` in LPS for images ITK read,
    ``nifti`` the nibabel image for NIfTI files.
    """

    path: str
    shape: tuple
    affine: np.ndarray
    voxel_type: str
    scalar: bool
    geometry: tuple = None
    nifti: object = None

    def lps_geometry(self):
        """``(spacing, origin, direction)`` as ITK sets them: kept when ITK read the image, else from the affine."""
        if self.geometry is not None:
            return self.geometry
        lps = LPS @ self.affine
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        return spacing, lps[:3, 3], lps[:3, :3] / spacing


def read_header(path):
    """The ``Header`` of the image at ``path`` (a file, or a DICOM series folder), or a UserError naming it."""
    fmt = image_format(path)
    if fmt == "nifti":
        try:
            image = nibabel.load(path)
        except Exception as error:  # nibabel raises many types for unreadable files
            raise UserError(f"{path}: cannot read as NIfTI ({error})") from None
        dtype = image.header.get_data_dtype()
        return Header(str(path), tuple(image.shape), image.affine, "rgb" if dtype.fields else str(dtype),
                      dtype.kind in "biuf", nifti=image)
    itk = _itk(path, fmt)
    try:
        if fmt == "dicom":
            io = itk.GDCMImageIO.New()
            series = itk.ImageSeriesReader[itk.Image[itk.F, 3]].New(FileNames=dicom_series(path), ImageIO=io)
            series.UpdateOutputInformation()
            grid = series.GetOutput()
            shape = list(grid.GetLargestPossibleRegion().GetSize())
            geometry = (np.asarray(grid.GetSpacing()), np.asarray(grid.GetOrigin()),
                        np.asarray(itk.array_from_matrix(grid.GetDirection())))
        else:
            io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
            if io is None:
                raise UserError(f"{path}: cannot read as {NAMES[fmt]} (ITK recognizes no image in it)")
            io.SetFileName(str(path))
            io.ReadImageInformation()
            axes = range(min(io.GetNumberOfDimensions(), 3))
            shape = [io.GetDimensions(i) for i in range(io.GetNumberOfDimensions())]
            # GetDirection(i) is axis i's direction: a column of the direction matrix.
            geometry = (np.array([io.GetSpacing(i) for i in axes]), np.array([io.GetOrigin(i) for i in axes]),
                        np.array([io.GetDirection(i)[: len(axes)] for i in axes]).T)
    except RuntimeError as error:
        raise UserError(f"{path}: cannot read as {NAMES[fmt]} ({itk_reason(error)})") from None
    components, pixel = io.GetNumberOfComponents(), io.GetPixelTypeAsString(io.GetPixelType())
    component = ITK_DTYPES.get(io.GetComponentTypeAsString(io.GetComponentType()), "unknown")
    if components > 1:
        shape.append(components)
    affine = np.eye(4)
    if len(geometry[0]) == 3:
        spacing, origin, direction = geometry
        affine[:3, :3], affine[:3, 3] = direction @ np.diag(spacing), origin
        affine = LPS @ affine
    return Header(str(path), tuple(shape), affine, component if pixel == "scalar" else f"{pixel} of {component}",
                  pixel in ("scalar", "vector") and component != "unknown", geometry=geometry)


def image_channels(paths):
    """Input channels of one case's images: one per file, or the volumes of a single 4D file (headers only)."""
    return len(paths) if len(paths) > 1 else (read_header(paths[0]).shape[3:] or (1,))[0]


def dicom_series(folder):
    """The slice files of the one DICOM series in ``folder``, in ITK's order; a UserError for none or several."""
    itk = _itk(folder, "dicom")
    names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(True)
    names.AddSeriesRestriction(SERIES_DATE)
    names.SetDirectory(str(folder))
    series = names.GetSeriesUIDs()
    if not series:
        raise UserError(f"{folder}: no DICOM slices in this folder (a DICOM series is given as its folder of slices)")
    if len(series) > 1:
        raise UserError(f"{folder}: holds {len(series)} DICOM series; expected one series per folder")
    files = list(names.GetFileNames(series[0]))
    if len(files) < 2:
        raise UserError(f"{folder}: holds a single DICOM slice; expected the slices of a 3D volume")
    return files


def read_array(path):
    """The voxels of the image at ``path`` as MONAI's readers give them ((X, Y, Z[, C])), or a UserError naming it."""
    fmt = image_format(path)
    try:
        if fmt == "nifti":
            return np.asanyarray(nibabel.load(path).dataobj)
        _itk(path, fmt)
        reader = ITKReader()
        return reader.get_data(reader.read(str(path)))[0]
    except UserError:
        raise
    except Exception as error:  # gzip, zlib, nibabel and ITK raise many types for damaged files
        reason = itk_reason(error) if isinstance(error, RuntimeError) else error
        raise UserError(f"{path}: cannot read its voxels, the file may be truncated ({reason})") from None


def write_image(array, reference, filename):
    """Write ``array`` ((X, Y, Z) or (X, Y, Z, C)) on ``reference``'s grid (a ``Header``), atomically.

    The format is the one ``filename``'s suffix names. NIfTI keeps a NIfTI reference's
    header (its qform and sform codes); NRRD and MetaImage get the reference's spacing,
    origin and direction.
    """
    array = np.asarray(array)
    fmt = SUFFIXES.get(image_suffix(filename), "nifti")
    if fmt == "nifti":
        image = _nifti_image(array, reference)
        with atomic_path(filename) as tmp:
            nibabel.save(image, tmp)
        return
    itk = _itk(filename, fmt)
    # ITK's arrays are indexed (Z, Y, X[, C]).
    image = itk.image_from_array(np.ascontiguousarray(np.swapaxes(array, 0, 2)), is_vector=array.ndim == 4)
    spacing, origin, direction = reference.lps_geometry()
    image.SetSpacing([float(v) for v in spacing])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction, dtype=np.float64)))
    with atomic_path(filename) as tmp:
        itk.imwrite(image, str(tmp), compression=True)


def _nifti_image(array, reference):
    if reference.nifti is None:
        image = nibabel.Nifti1Image(array, reference.affine)
        image.set_qform(reference.affine, code=1)  # scanner coordinates, as ITK's geometry is
        image.set_sform(reference.affine, code=1)
        return image
    header = reference.nifti.header.copy()
    header.set_data_dtype(array.dtype)
    header.set_slope_inter(1, 0)
    image = nibabel.Nifti1Image(array, reference.affine, header=header)
    image.set_qform(reference.affine, code=int(header["qform_code"]) or 1)
    image.set_sform(reference.affine, code=int(header["sform_code"]) or 1)
    return image


def _itk(path, fmt):
    # ITK's SWIG modules warn about their own types as they load (on first use, not at import).
    warnings.filterwarnings("ignore", message=r"builtin type \w+ has no __module__ attribute",
                            category=DeprecationWarning)
    try:
        import itk
    except ImportError:
        what = "DICOM series" if fmt == "dicom" else f"{NAMES[fmt]} images"
        raise UserError(f"{path}: {what} need ITK, which is not installed: {install_hint('formats')}") from None
    # ITK's C++ warnings ("No Series were found") go straight to the console, ahead of unet3d's own line.
    itk.ProcessObject.SetGlobalWarningDisplay(False)
    return itk


def itk_reason(error):
    """The last line of an ITK exception, without ITK's source location and object address."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return re.sub(r"^itk::ERROR: \w+\(0x[0-9a-f]+\): ", "", lines[-1] if lines else type(error).__name__)
