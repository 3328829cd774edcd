"""The report page's HTML: one file with its style and a few lines of script inline, and pictures as ``data:`` URIs,
so it opens from any disk in any browser without fetching anything."""

import html
import math
import re

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1250px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: 2px 8px; border-bottom: 1px solid #eee; }
th { background: #f4f4f4; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[data-order=asc]::after { content: " \\25B2"; } table.sortable th[data-order=desc]::after { content: " \\25BC"; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figcaption { font-size: 12px; color: #555; max-width: 560px; } img { display: block; }
.note { color: #555; } .swatch { display: inline-block; width: 1em; height: .8em; margin: 0 .3em 0 .8em; }
.wide { overflow-x: auto; }
pre { background: #f8f8f8; padding: .8em; overflow-x: auto; font-size: 12px; }
"""
# Sorts a table.sortable by the clicked column: numbers (a cell's data-v, else its text) as numbers, the rest as text.
SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], column = th.cellIndex;
    var ascending = th.dataset.order !== "asc";
    table.querySelectorAll("th").forEach(function (other) { delete other.dataset.order; });
    th.dataset.order = ascending ? "asc" : "desc";
    function key(row) {
      var cell = row.cells[column], text = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent;
      var number = parseFloat(text);
      return isNaN(number) ? text : number;
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      var order = typeof x === "number" && typeof y === "number" ? x - y
        : typeof x === "number" ? -1 : typeof y === "number" ? 1 : String(x).localeCompare(String(y));
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def escape(text):
    """``text`` as HTML text."""
    return html.escape(str(text), quote=True)


def anchor(*parts):
    """An element id made of ``parts``, kept to the characters every browser takes in a fragment."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(map(str, parts)))


def number(value, digits=4):
    """A table cell holding a number, right aligned; NaN shows empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<td class="n" data-v=""></td>'
    if isinstance(value, float):
        return f'<td class="n" data-v="{value!r}">{value:.{digits}f}</td>'
    return f'<td class="n">{escape(value)}</td>'


def table(header, rows, sortable=False, element_id=None):
    """An HTML table: ``header`` texts, then ``rows`` of cells (``<td>`` strings, or values shown as text)."""
    attributes = (' class="sortable"' if sortable else "") + (f' id="{element_id}"' if element_id else "")
    head = "".join(f"<th>{escape(name)}</th>" for name in header)
    body = "".join("<tr>" + "".join(cell if str(cell).startswith("<td") else f"<td>{escape(cell)}</td>"
                                    for cell in row) + "</tr>" for row in rows)
    return f'<div class="wide"><table{attributes}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def image(uri, alt, width=None):
    """An ``<img>`` of a ``data:`` URI."""
    size = f' width="{width}"' if width else ""
    return f'<img src="{uri}" alt="{escape(alt)}"{size}>'


def figure(uri, alt, caption, element_id=None):
    """A picture with its caption."""
    identity = f' id="{element_id}"' if element_id else ""
    return f"<figure{identity}>{image(uri, alt)}<figcaption>{caption}</figcaption></figure>"


def legend(entries):
    """Colour swatches with their meaning: ``entries`` of ``(rgb, text)``."""
    return "<p class=\"note\">" + "".join(
        f'<span class="swatch" style="background: rgb{tuple(rgb)}"></span>{escape(text)}' for rgb, text in entries) + "</p>"


def section(title, body, element_id):
    """A titled section of the page."""
    return f'<section id="{element_id}"><h2>{escape(title)}</h2>{body}</section>'


def page(title, sections):
    """The whole HTML document."""
    links = " · ".join(f'<a href="#{element_id}">{escape(name)}</a>' for name, element_id, _ in sections)
    body = "".join(content for _, _, content in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1><nav>{links}</nav>{body}"
            f"<script>{SCRIPT}</script></body></html>\n")
