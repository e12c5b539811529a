"""charrnn playground: watch a character-level GRU write, with its next-character probabilities and gates.

The Space's entry point: the page itself is built by charrnn.page (one module per tab).
Run: python app.py (CHARRNN_MODEL picks the model; the shipped weights/tiny-shakespeare by default).
"""

from charrnn.page import LAUNCH, build_demo

demo = build_demo()

if __name__ == "__main__":
    demo.launch(**LAUNCH)
