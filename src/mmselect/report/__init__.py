"""Reports of a selection: ``report.md`` (terminals, diffs) and ``report.html`` (the page to open first),
and the comparison of several selections.

Modules: :mod:`.sources` (the output directory, its records and features, read lazily),
:mod:`.summaries` (grouped rejections, composition, histograms, clusters, timings), :mod:`.record_cards`
(sample records with thumbnails), :mod:`.projection` (the 2-D map), :mod:`.charts` (inline SVG),
:mod:`.page` (HTML building blocks), :mod:`.single` (``report.html``), :mod:`.compare`,
:mod:`.markdown` (``report.md``).
"""

from .compare import compare
from .markdown import REPORT_FILE, write_report
from .single import HTML_FILE, write_html_report

__all__ = ["HTML_FILE", "REPORT_FILE", "compare", "write_html_report", "write_report"]
