"""A button whose next click replaces what its last click started, with Gradio's own means.

Gradio skips a click while the event it started is still pending (trigger_mode "once"): a visitor who changed the
prompt and pressed Generate during a long run got nothing, and a text that did not match the controls. Here the
button's click presses two hidden buttons in the browser, in order: "stop", whose listener cancels the events of
the last click (Gradio closes their generators, and the decode server frees their rows at the next step), then
"start", whose events run with trigger_mode "always_last": a click that comes while the cancelled events are still
ending waits for them and then runs with the controls as they are by then. (A `cancels` on the button itself would
not do: Gradio dispatches a button's listeners in order, and the deferred click, dispatched again, would cancel
its own new run.)
"""

from __future__ import annotations

import gradio as gr


class Replacing:
    def __init__(self, button: gr.Button, name: str):
        self.stop = gr.Button(visible="hidden", elem_id=f"{name}-stop")
        self.start = gr.Button(visible="hidden", elem_id=f"{name}-start")
        button.click(None, js=f"() => charrnnPage.restart('{name}')")

    def click(self, fn, inputs, outputs, **kwargs):
        """An event of the button (on its hidden "start"): a click replaces the run of the last."""
        return self.start.click(fn, inputs, outputs, trigger_mode="always_last", **kwargs)

    def cancels(self, *events) -> None:
        """The events a click replaces (started by this button, or by anything else that writes into the same
        outputs)."""
        self.stop.click(None, None, None, cancels=list(events))
