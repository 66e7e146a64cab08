"""``main.py train``: train a model into a run folder, printing progress lines."""

from __future__ import annotations

import sys
import time


def add_arguments(parser) -> None:
    parser.add_argument("--data", metavar="DATA_DIR", help="dataset folder (Kaggle layout); "
                        "with --resume, defaults to the run's dataset")
    parser.add_argument("--run-dir", required=True, metavar="RUN_DIR", help="run folder to create "
                        "(or to resume)")
    parser.add_argument("--config", metavar="FILE.yaml", help="settings file (sections data, model, "
                        "train)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue a stopped run from "
                        "checkpoints/last.ckpt with its saved settings (or a stopped fold group); "
                        "--set train.devices=N may move it to fewer devices")
    parser.add_argument("--folds", metavar="all|K,K,...", help="train a fold group: every fold of "
                        "data.num_folds ('all') or the listed ones, one after another, into "
                        "RUN_DIR/fold-K/; then score the out-of-fold predictions and tune the "
                        "post-processing on them (RUN_DIR/cv.json)")
    parser.add_argument("--corrections", metavar="FILE.csv", help="corrected masks (train.csv "
                        "format: id,class,segmentation) that replace the dataset's rows for their "
                        "ids; copied into the run, so a resume trains on the same masks")
    parser.add_argument("--events", choices=("text", "json"), default="text",
                        help="json: one JSON object per engine event on stdout, and a line 'stop' "
                        "on stdin stops as Ctrl+C does (how the app runs a multi-device run)")
    parser.add_argument("--from-run", metavar="PARENT_RUN", help="fine-tune: start from that "
                        "run's best weights with its settings and a short schedule (a quarter of "
                        "its epochs, a third of its learning rate; --set may change the schedule); "
                        "with --corrections, the usual way to retrain on corrected masks. When it "
                        "ends, both models are scored on the same truth (RUN_DIR/comparison.json)")


class ProgressPrinter:
    """One line per validation, and a step line at most every few seconds."""

    def __init__(self, every_seconds: float = 5.0):
        self.every = every_seconds
        self.last = 0.0

    def __call__(self, event) -> None:
        from core import events as ev

        if isinstance(event, ev.TrainingStep):
            now = time.monotonic()
            if now - self.last >= self.every:
                self.last = now
                print(f"epoch {event.epoch} step {event.step}: loss {event.loss:.4f}, "
                      f"{event.images_per_sec:.1f} images/s, ETA {_duration(event.eta_seconds)}",
                      flush=True)
        elif isinstance(event, ev.ValidationResult):
            m = event.metrics
            organs = ", ".join(f"{k[9:]} {v:.3f}" for k, v in m.items()
                               if k.startswith("val_dice_"))
            print(f"epoch {event.epoch} validation: loss {m.get('val_loss', float('nan')):.4f}, "
                  f"dice {m.get('val_dice', float('nan')):.4f} ({organs}), hausdorff "
                  f"{m.get('val_hausdorff', float('nan')):.4f}, score "
                  f"{m.get('val_score', float('nan')):.4f}", flush=True)
        elif isinstance(event, ev.GroupProgress):
            if event.fold >= 0:
                print(f"fold {event.fold} ({event.position + 1} of {event.count})", flush=True)
            else:
                print("all folds trained; scoring the out-of-fold predictions", flush=True)
        elif isinstance(event, ev.LogMessage) and event.message.startswith((
                "out-of-fold", "post-processing", "compared with the parent", "starting from")):
            print(event.message, flush=True)
        elif isinstance(event, ev.TrainingStarted):
            print(f"training on {event.device} ({event.precision}): {event.epochs} epochs × "
                  f"{event.steps_per_epoch} steps, from step {event.start_step}", flush=True)
        elif isinstance(event, ev.TrainingFinished):
            best = (f", best {event.monitor} {event.best_score:.4f}"
                    if event.best_score is not None else "")
            print(f"{event.status}: {event.reason}{best}", flush=True)
        elif isinstance(event, ev.LogMessage) and event.level != "info":
            print(f"{event.level}: {event.message}", file=sys.stderr, flush=True)


class JsonLines:
    """``--events json``: each event as one line of JSON on stdout (``core.events.to_json``)."""

    def __call__(self, event) -> None:
        from core.events import to_json

        print(to_json(event), flush=True)


def _stop_on_stdin(session) -> None:
    """``--events json``: a line ``stop`` on stdin asks the session to stop (the app's Stop; a
    closed stdin, the app gone, does the same)."""
    import threading

    def read() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        session.request_stop()

    threading.Thread(target=read, name="stop-on-stdin", daemon=True).start()


def parse_folds(text: str, num_folds: int) -> list[int]:
    """``all`` → every fold; ``0,2`` → those (in order, without repeats)."""
    from core.errors import StudioError

    if text.strip().lower() == "all":
        return list(range(num_folds))
    try:
        folds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise StudioError(f"--folds {text!r}: give 'all' or fold numbers like 0,1,2") from None
    bad = [k for k in folds if not 0 <= k < num_folds]
    if bad or not folds:
        raise StudioError(f"--folds {text!r}: folds are 0…{num_folds - 1} (data.num_folds is "
                          f"{num_folds}; change it with --set data.num_folds=N)")
    return list(dict.fromkeys(folds))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run(args) -> int:
    from core.config import StudioConfig, apply_overrides, load_config
    from core.cv import FoldGroupSession, is_group
    from core.errors import StudioError
    from core.session import TrainingSession

    printer = JsonLines() if args.events == "json" else ProgressPrinter()
    if args.resume:
        if args.config or args.folds or args.corrections or args.from_run:
            raise StudioError("--resume continues with the run's saved settings; drop --config, "
                              "--folds, --corrections and --from-run (start a new run to change "
                              "them; --set may change train.devices and train.num_nodes only)")
        if is_group(args.run_dir):
            if args.set:
                raise StudioError("--resume of a fold group takes no --set")
            session = FoldGroupSession.resume(args.run_dir, on_event=printer,
                                              data_dir=args.data)
        else:
            session = TrainingSession.resume(args.run_dir, on_event=printer,
                                             data_dir=args.data, devices=args.set)
    else:
        if args.from_run:
            from core.finetune import finetune_config, parent_run

            if args.config or args.folds:
                raise StudioError("--from-run takes the parent run's settings; drop --config and "
                                  "--folds (change the schedule with --set)")
            data = args.data or parent_run(args.from_run).info().data_dir
            session = TrainingSession(finetune_config(args.from_run, args.set), data, args.run_dir,
                                      on_event=printer, corrections=args.corrections,
                                      init_from=args.from_run)
        elif not args.data:
            raise StudioError("--data DATA_DIR is required for a new run")
        else:
            config = apply_overrides(load_config(args.config) if args.config else StudioConfig(),
                                     args.set)
            if args.folds:
                session = FoldGroupSession(config, args.data, args.run_dir, printer,
                                           folds=parse_folds(args.folds, config.data.num_folds),
                                           corrections=args.corrections)
            else:
                session = TrainingSession(config, args.data, args.run_dir, on_event=printer,
                                          corrections=args.corrections)
    if args.events == "json":
        _stop_on_stdin(session)
    return _train(session)


def _train(session) -> int:
    import signal

    from core.session import AbortRequested

    def abort(_signum, _frame):  # the second Ctrl+C: end now, keep the last checkpoint
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise AbortRequested()

    def stop(_signum, _frame):  # Ctrl+C: stop cleanly with a resumable checkpoint
        signal.signal(signal.SIGINT, abort)  # first: a second Ctrl+C may come at any moment
        session.request_stop()
        print("stopping after this step (Ctrl+C again to abort, keeping the last checkpoint)…",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        result = session.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    if getattr(session, "rank_zero", True):  # DDP workers run this command too: one report
        print(f"run folder: {session.run_dir}")
    if result.status == "aborted":
        return 130
    return 0 if result.status in ("finished", "stopped") else 1
