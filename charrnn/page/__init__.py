"""The page: one Gradio Blocks with a tab per module (write, units, whatif), each calling the logic below it;
what every visitor shares lives in a Site (site), the page's inputs are checked in one place (inputs), links and
exports are share's, the Units tab's work is units_service's, the Write tab's figures views', and the page's
script is page.js. Gradio is imported here and nowhere else in charrnn.

    from charrnn.page import build_demo, LAUNCH
    build_demo().launch(**LAUNCH)
"""

from __future__ import annotations

import gradio as gr

from .inputs import unit_name
from .site import Site
from .units import units_tab
from .views import HEAD
from .whatif import whatif_tab
from .why import Why
from .write import write_tab

CSS = """
.gradio-container {max-width: 1400px !important}
#generated-text textarea {font-family: ui-monospace, monospace; font-size: 15px}
/* Figures lay out on their own: the streaming text must not make the browser lay out every plot again. */
#probabilities, #heatmap-1, #heatmap-2, #heatmap-3, #saturation, #surprisal, #unit-text {contain: content}
#units-text textarea, #gain-text textarea {font-family: ui-monospace, monospace; font-size: 14px}
"""
# No run history: it would copy every run's figures (megabytes) into the browser's localStorage. Enough worker
# threads for every visitor the decode server takes at once (each streaming visitor holds one while it waits).
LAUNCH = dict(css=CSS, theme=gr.themes.Soft(), head=HEAD, show_error=True, run_history=False,
              max_threads=160)


def build_demo(site: Site | None = None) -> gr.Blocks:
    site = site or Site()
    # Files handed to visitors (exports) are removed from Gradio's cache after 15 minutes.
    with gr.Blocks(title="charrnn: watch a GRU or LSTM write", delete_cache=(300, 900)) as demo:
        model_key = gr.State(site.default_key)
        why = Why(site, model_key)  # /attribute, /patch, /dose_response: under the Write tab's text and in What-if
        gr.Markdown(
            "# charrnn: watch a character-level GRU or LSTM write\n"
            "Type a prompt, choose how to pick each next character, and watch the model write. Then step through "
            "what it predicted at every character, and how its gates responded (a GRU's reset and update gates, an "
            "LSTM's input, forget and output gates).")
        with gr.Tabs() as tabs:
            with gr.Tab("Write", id="write"):
                write = write_tab(site, model_key, why)
            with gr.Tab("Units", id="units"):
                demo.units = units = units_tab(site, model_key)
            with gr.Tab("What-if", id="whatif"):
                whatif = whatif_tab(site, model_key, write, why)
        why.api()
        # Between the tabs: a heatmap row clicked on the Write tab opens that unit's profile; a profiled unit can
        # be forced in What-if. Each writes a unit's name ("L3 hidden 99") into the other tab's hidden textbox.
        write["heatmap_unit"].change(lambda name: (name, gr.Tabs(selected="units")), write["heatmap_unit"],
                                     [units["open_profile"], tabs], api_visibility="private")
        units["force"].click(lambda layer, kind, unit: (unit_name(layer, kind, int(unit or 0)),
                                                        gr.Tabs(selected="whatif")),
                             [units["layer"], units["kind"], units["unit"]], [whatif["unit_to_force"], tabs],
                             api_visibility="private")
    limits = site.server.limits
    demo.queue(default_concurrency_limit=2, max_size=limits.max_rows + limits.max_waiting + 32)
    demo.site = site
    return demo
