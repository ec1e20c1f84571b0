"""Sphinx extension for the coft book: keep the rendered site self-contained and error-free.

* sphinx-thebe (loaded by jupyter-book v1) registers its inline configuration script twice,
  which raises "Identifier 'THEBE_JS_URL' has already been declared" in every page; this
  removes the repeated script tags.
* Nothing here is executed: the notebooks are run by papermill before the build.
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    files = context.get("script_files")
    if not files:
        return
    seen, out = set(), []
    for js in files:
        key = (str(getattr(js, "filename", js) or ""), tuple(sorted((getattr(js, "attributes", {}) or {}).items())))
        if key in seen:
            continue
        seen.add(key)
        out.append(js)
    context["script_files"] = out


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
