"""`solo-deploy eval-track`: MOTA, IDF1 and ID switches of `run --track` output against ground truth."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .._atomic import write_json
from .._paths import check_outputs
from .app import LogLevelOpt, app, setup_logging


@app.command("eval-track")
def eval_track(
    predictions: Path = typer.Argument(..., help="JSON lines of `run --track --save-json`."),
    gt: str = typer.Option("demo", "--gt", help="'demo' (the built-in demo video's objects) or a COCO file of a "
                           "video with frame_index and track_id (as `data synthetic --video` writes)."),
    stream: int = typer.Option(0, "--stream", min=0, help="Which stream of the lines to score."),
    json_out: Optional[Path] = typer.Option(None, "--json", "-o", "--output", help="Write the metrics as JSON."),
    log_level: str = LogLevelOpt,
) -> None:
    """CLEAR MOT and IDF1 (py-motmetrics), predictions matched to objects by mask IoU >= 0.5, over
    the frames the lines hold. HOTA is not reported (see the README)."""
    setup_logging(log_level)
    from ..evaluation.tracking import (
        METRICS,
        demo_ground_truth,
        evaluate_tracks,
        load_track_lines,
        load_video_ground_truth,
    )

    check_outputs([("--json", json_out)], [("predictions", predictions), ("--gt", None if gt == "demo" else gt)])
    frames, source = load_track_lines(predictions, stream)
    truth = demo_ground_truth(frames) if gt == "demo" else load_video_ground_truth(gt)
    m = evaluate_tracks(frames, truth)
    m.update({"predictions": str(predictions), "stream": stream, "source": source, "ground_truth": gt})
    typer.echo(f"{predictions} (stream {stream}, {source or 'unknown source'}) vs {gt}: {m['frames']} frames, "
               f"mask IoU >= {m['iou_threshold']}")
    parts = []
    for key, name in METRICS.items():
        value = m[key]
        if value is None:
            parts.append(f"{name} n/a")
        else:
            parts.append(f"{name} {100 * value:.1f}" if key in ("mota", "idf1", "precision", "recall")
                         else f"{name} {value}")
    typer.echo("  " + "  ".join(parts[:5]))
    typer.echo("  " + "  ".join(parts[5:]))
    if json_out:
        write_json(json_out, m)
        typer.echo(f"wrote {json_out}")
