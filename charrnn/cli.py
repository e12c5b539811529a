"""charrnn {train,train-bigram,sample,evaluate,push,atlas,convert,app} (or python -m charrnn ...): the command line."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys

from .models.shipped import shipped_model

SHIPPED_HELP = "local folder or Hub repo id (default: the shipped tiny-shakespeare model)"


def build_parser(prog: str = "charrnn") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="A character-level GRU you can watch write.")
    commands = parser.add_subparsers(dest="command", required=True)

    t = commands.add_parser("train", help="train a model on a UTF-8 text file")
    t.add_argument("--text", required=True, help="training text (first 90 %% trains, last 10 %% validates)")
    t.add_argument("--out", required=True, help="folder for the best model (Hub layout), e.g. weights/NAME")
    t.add_argument("--embedding-dim", type=int, default=64)
    t.add_argument("--hidden-size", type=int, default=512)
    t.add_argument("--num-layers", type=int, default=3)
    t.add_argument("--dropout", type=float, default=0.3)
    t.add_argument("--seq-len", type=int, default=128, help="characters per training sequence (default 128)")
    t.add_argument("--batch-size", type=int, default=128, help="sequences per batch (default 128)")
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine decay to --min-lr)")
    t.add_argument("--min-lr", type=float, default=1e-4)
    t.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient norm to this")
    length = t.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps (overrides --epochs)")
    length.add_argument("--epochs", type=float, default=40, help="passes over the training part (default 40)")
    t.add_argument("--eval-every", type=int, default=250, help="steps between validation passes")
    t.add_argument("--seed", type=int, default=1337)
    t.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    t.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoint-dir")
    t.add_argument("--checkpoint-dir", help="resumable state (default checkpoints/NAME)")
    t.add_argument("--save-dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    t.add_argument("--cell", default="gru", choices=["gru", "lstm"], help="the recurrent cell (default gru)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    b = commands.add_parser("train-bigram", help="train the bigram baseline of \"Let's build GPT\" on a text file")
    b.add_argument("--text", required=True, help="training text (first 90 %% trains, last 10 %% validates)")
    b.add_argument("--out", required=True, help="folder for the model (Hub layout), e.g. weights/bigram")
    b.add_argument("--steps", type=int, default=12_000, help="optimizer steps (default 12000)")
    b.add_argument("--batch-size", type=int, default=64, help="sequences per batch, B (default 64)")
    b.add_argument("--block-size", type=int, default=256, help="characters per sequence, T (default 256)")
    b.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3, as in the video)")
    b.add_argument("--eval-every", type=int, default=1000, help="steps between validation passes")
    b.add_argument("--seed", type=int, default=1337)

    s = commands.add_parser("sample", help="write text after a prompt")
    s.add_argument("--model", default=shipped_model(), help=SHIPPED_HELP)
    s.add_argument("--revision", help="Hub branch, tag or commit")
    s.add_argument("--prompt", default="ROMEO:")
    s.add_argument("--max-new-chars", type=int, default=500)
    s.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    s.add_argument("--top-k", type=int, default=0, help="0 = off")
    s.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--drop-unknown", action="store_true", help="drop prompt characters outside the vocabulary")
    s.add_argument("--device", default="auto")
    s.add_argument("--stream", action="store_true", help="print the text as it is written")

    e = commands.add_parser("evaluate", help="validation loss (nats/char) over consecutive 256-char windows")
    e.add_argument("--model", default=shipped_model(), help=SHIPPED_HELP)
    e.add_argument("--revision")
    e.add_argument("--text", required=True)
    e.add_argument("--part", default="val", choices=["val", "train", "all"], help="which part of the text")
    e.add_argument("--window", type=int, default=256)
    e.add_argument("--device", default="auto")

    p = commands.add_parser("push", help="publish a model folder to the Hugging Face Hub")
    p.add_argument("folder", help="e.g. weights/tiny-shakespeare")
    p.add_argument("repo_id", help="owner/name on the Hub")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch to push to (default main)")
    p.add_argument("--message", default="Upload charrnn model")
    a = commands.add_parser("atlas", help="build the unit atlas of a model folder over its reference text")
    a.add_argument("--model", default="weights/tiny-shakespeare",
                   help="local model folder with a reference.txt; atlas.safetensors is written there")
    a.add_argument("--from-corpus", metavar="TEXT",
                   help="first write the validation split (last 10 %%) of this UTF-8 file to FOLDER/reference.txt")
    a.add_argument("--pattern", action="append", default=[], metavar="REGEX",
                   help="save this regular expression in FOLDER/patterns.json, to be tried as an explanation of "
                        "every unit (repeatable; the saved ones are always tried)")
    a.add_argument("--device", default="auto")
    a.add_argument("--quiet", action="store_true", help="no progress bar")

    c = commands.add_parser("convert", help="turn your own char-RNN checkpoint (.pt, embedding -> nn.GRU -> linear "
                                            "head) into a model folder that the page and the library load")
    c.add_argument("checkpoint", help="a torch.save file {model_state, config, itos, stoi}; read with "
                                      "torch.load(weights_only=True), nothing in it runs")
    c.add_argument("out", help="new folder for the model (Hub layout), e.g. weights/NAME")
    c.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="store the weights as this (default: the checkpoint's own dtype, float32 for float64)")
    c.add_argument("--overwrite", action="store_true", help="replace the model files of an existing folder")

    a = commands.add_parser("app", help="start the playground page")
    a.add_argument("--model", help="the model the page opens with: local folder or Hub repo id (default: "
                                   "$CHARRNN_MODEL, else the shipped tiny-shakespeare model)")
    a.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1; "
                                  "0.0.0.0 for every interface)")
    a.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT, else the first free from 7860)")
    a.add_argument("--share", action="store_true", help="also make a temporary public gradio.live link")
    return parser


def build_atlas_command(args) -> dict:
    import time
    from pathlib import Path

    from tqdm.auto import tqdm

    from .analysis.atlas import (ATLAS_FILE, PATTERNS_FILE, REFERENCE_FILE, build_atlas, read_patterns,
                                 read_reference_text, save_atlas)
    from .analysis.explain import check_patterns
    from .models.loading import WEIGHTS_FILE, load_model
    from .training.data import read_text, split

    folder = Path(args.model)
    if not folder.is_dir():
        raise ValueError(f"{args.model} is not a local model folder: an atlas is written next to the weights")
    model = load_model(folder, device=args.device, max_model_mb=math.inf)  # the user's own folder, GRU or LSTM
    if args.from_corpus:
        _, validation = split(read_text(args.from_corpus))  # never the training part
        with open(folder / REFERENCE_FILE, "w", encoding="utf-8", newline="") as f:
            f.write(validation)
    text = read_reference_text(folder)
    patterns = read_patterns(folder)
    if any(p not in patterns for p in args.pattern):
        patterns = check_patterns(patterns + [p for p in dict.fromkeys(args.pattern) if p not in patterns])
        (folder / PATTERNS_FILE).write_text(json.dumps(patterns, indent=1) + "\n", encoding="utf-8")
    began = time.perf_counter()
    with tqdm(total=len(text), unit="char", unit_scale=True, disable=args.quiet, dynamic_ncols=True) as bar:
        atlas = build_atlas(model, text, model_file=folder / WEIGHTS_FILE, patterns=patterns,
                            progress=lambda done, total: bar.update(done - bar.n))
    path = save_atlas(atlas, folder / ATLAS_FILE)
    return {"atlas": str(path), "bytes": path.stat().st_size, "chars": len(text),
            "seconds": round(time.perf_counter() - began, 1), "device": str(model.device),
            "explained": atlas.explanations.overall()}


def run(args, argv, prog: str) -> None:
    if args.command == "train":
        from .training.train import train

        info = train(args.text, args.out, embedding_dim=args.embedding_dim, hidden_size=args.hidden_size,
                     num_layers=args.num_layers, dropout=args.dropout, seq_len=args.seq_len,
                     batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr, warmup=args.warmup,
                     weight_decay=args.weight_decay, grad_clip=args.grad_clip, steps=args.steps,
                     epochs=args.epochs, eval_every=args.eval_every, seed=args.seed, device=args.device,
                     resume=args.resume, checkpoint_dir=args.checkpoint_dir, save_dtype=args.save_dtype,
                     cell=args.cell,
                     command=f"{prog} " + shlex.join(argv), progress=not args.quiet)
        print(f"best validation loss {info['val_loss']:.4f} nats/char at step {info['best_step']}; "
              f"saved to {args.out}")
    elif args.command == "train-bigram":
        from .training.train_bigram import train_bigram

        info = train_bigram(args.text, args.out, steps=args.steps, batch_size=args.batch_size,
                            block_size=args.block_size, lr=args.lr, eval_every=args.eval_every, seed=args.seed,
                            command=f"{prog} " + shlex.join(argv))
        bounds = info["bounds"]
        print(f"validation loss {info['val_loss']:.4f} nats/char (bigram bounds from counts: "
              f"{bounds['val_own_counts']:.4f} with the validation text's own counts, {bounds['train_counts']:.4f} "
              f"with the training part's, add-{bounds['alpha']:g}); saved to {args.out}")
    elif args.command == "sample":
        from .decoding.sampling import DecodeSettings
        from .models.loading import load_model

        settings = DecodeSettings(args.max_new_chars, args.temperature, args.top_k, args.top_p, args.seed)
        model = load_model(args.model, revision=args.revision, device=args.device)
        on_unknown = "drop" if args.drop_unknown else "error"
        if args.stream:
            shown = 0
            for update in model.stream(args.prompt, settings, on_unknown=on_unknown):
                sys.stdout.write(update.text[shown:])
                sys.stdout.flush()
                shown = len(update.text)
            print()
        else:
            print(model.generate(args.prompt, settings, on_unknown=on_unknown).text)
    elif args.command == "evaluate":
        from .models.loading import load_model
        from .training.evaluate import evaluate_file

        model = load_model(args.model, revision=args.revision, device=args.device)
        result = evaluate_file(model, args.text, args.part, args.window)
        print(json.dumps({"model": args.model, **result, "loss": round(result["loss"], 4)}))
    elif args.command == "push":
        from .models.publish import push

        print(push(args.folder, args.repo_id, private=args.private, revision=args.revision, message=args.message))
    elif args.command == "atlas":
        print(json.dumps(build_atlas_command(args)))
    elif args.command == "convert":
        from .models.convert import convert

        model = convert(args.checkpoint, args.out, dtype=args.dtype, overwrite=args.overwrite)
        parameters = sum(p.numel() for p in model.parameters())
        print(f"converted {args.checkpoint}: GRU {model.num_layers} x {model.hidden_size}, {len(model.vocab)} "
              f"characters, {parameters:,} parameters stored as {model.save_dtype}; saved to {args.out}")
    elif args.command == "app":
        from .page import LAUNCH, build_demo
        from .page.site import Site

        build_demo(Site(default_model=args.model)).launch(server_name=args.host, server_port=args.port,
                                                          share=args.share, **LAUNCH)




def main(argv: list[str] | None = None, prog: str = "charrnn") -> int:
    """The `charrnn` console script (and python -m charrnn, with prog="python -m charrnn")."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(prog).parse_args(argv)
    from .models.loading import ModelLoadError
    from .training.data import DataError

    try:
        run(args, argv, prog)
    except (DataError, ModelLoadError, ValueError, OSError) as e:
        print(f"charrnn {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"charrnn {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
