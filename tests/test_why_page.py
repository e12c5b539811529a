"""/attribute, /patch and /dose_response over HTTP (gradio_client): their parameters, what the library gives for
the same inputs, and clear messages for bad input."""

import numpy as np
import pytest

from charrnn.analysis.attribution import attribute, patch
from charrnn.analysis.dose import dose_response

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\nF"
CLEAN, CORRUPTED = "JULIET:\nO Romeo, Romeo! wherefore art thou R", "JULIET:\nO Paris, Paris! wherefore art thou R"


def test_the_endpoints_have_the_documented_parameters(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = {name: [p["parameter_name"] for p in endpoints[name]["parameters"]]
             for name in ("/attribute", "/patch", "/dose_response")}
    assert names == {"/attribute": ["text", "step", "char_a", "char_b"],
                     "/patch": ["clean", "corrupted", "target", "foil"],
                     "/dose_response": ["prompt", "max_new_chars", "layer", "kind", "unit", "values", "samples",
                                        "statistic"]}


def test_the_endpoints_answer_what_the_library_computes(client, shipped):
    answered = client.predict(text=TEXT, step=len(TEXT) - 2, char_a="", char_b="", api_name="/attribute")
    expected = attribute(shipped, TEXT, len(TEXT) - 2)
    assert answered["char_a"] == "F" and answered["char_b"] == expected["char_b"]
    assert answered["logit_diff"] == pytest.approx(expected["logit_diff"], abs=1e-9)
    assert [u["unit"] for u in answered["units"]] == [u["unit"] for u in expected["units"]]
    patched = client.predict(clean=CLEAN, corrupted=CORRUPTED, target="o", foil="a", api_name="/patch")
    assert np.allclose(patched["grid"], patch(shipped, CLEAN, CORRUPTED, "o", "a")["grid"], atol=1e-9)
    swept = client.predict(prompt="ROMEO:\n", max_new_chars=40, layer=3, kind="hidden", unit=99, values="-0.9, 0.9",
                           samples=2, statistic="newlines per 100 characters", api_name="/dose_response")
    direct = dose_response(shipped, "ROMEO:\n", 40, 3, "hidden", 99, [-0.9, 0.9], 2, "newlines per 100 characters")
    assert swept["texts"] == direct["texts"] and swept["runs"] == direct["runs"] and swept["rho"] == direct["rho"]


@pytest.mark.parametrize("endpoint,args,message", [
    ("/attribute", dict(text=TEXT, step=500, char_a="", char_b=""), "Step must be a whole number from 0 to"),
    ("/attribute", dict(text="Señor", step=1, char_a="", char_b=""), "not in the model's vocabulary|Ñ|ñ"),
    ("/patch", dict(clean="ROMEO", corrupted="ROME", target="a", foil="b"), "the same length"),
    ("/patch", dict(clean="A" * 301, corrupted="A" * 301, target="a", foil="b"), "at most 300"),
    ("/dose_response", dict(prompt="A", max_new_chars=50, layer=3, kind="hidden", unit=99, values="1, x",
                            samples=2, statistic="mean line length"), "A value must be a number"),
    ("/dose_response", dict(prompt="A", max_new_chars=500, layer=3, kind="hidden", unit=99,
                            values="0 0 0 0 0 0 0 0 0 0 0", samples=32, statistic="mean line length"),
     "at most 60,000 characters per sweep"),
    ("/dose_response", dict(prompt="A", max_new_chars=50, layer=3, kind="forget", unit=99, values="0.5",
                            samples=2, statistic="mean line length"), "Kind must be one of"),
])
def test_bad_input_gets_a_clear_message(client, endpoint, args, message):
    with pytest.raises(Exception, match=message):
        client.predict(**args, api_name=endpoint)
