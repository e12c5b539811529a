"""Serving: the one compute thread that runs all of the page's torch work (compute), every visitor's request a row
of one decode loop per model (server), runs kept by their recipe and the traces of recent ones (runs), and the
models a public page may load (registry). No gradio here."""
