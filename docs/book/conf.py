# Sphinx configuration of the workbook's book (`jlml book` / `make book`).
#
# `jlml_lib.book` writes the pages (one per notebook, the tables, the runs) into a generated source
# folder and runs `sphinx-build -c docs/book` on it, so this file holds settings only.
project = "JLML workbook"
author = "jlml-workbook contributors"
copyright = "the jlml-workbook contributors (MIT)"

extensions = ["myst_nb"]

# Show exactly what was run: the executed copies are rendered, never re-executed.
nb_execution_mode = "off"
# display(Markdown(table)) outputs (notebook 09) hold pipe tables: parse them as MyST, not CommonMark.
nb_render_markdown_format = "myst"
nb_merge_streams = True
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
# Executed notebooks start their headings wherever their authors liked; that is not an error here.
suppress_warnings = ["myst.header"]

# furo ships its CSS, JavaScript and fonts inside the wheel: the site needs no network, to build or to read.
html_theme = "furo"
html_title = "JLML workbook"
html_show_sourcelink = False
html_copy_source = False
