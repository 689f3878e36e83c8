"""Progress output: a bar on a terminal, plain periodic lines in a log (no carriage returns)."""

import io

from ikem_data.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_plain_lines_and_a_terminal_a_bar():
    log = io.StringIO()
    bar = progress_bar(total=4, desc="epoch 1/2", unit="step", file=log, mininterval=0, leave=True)
    for _ in range(4):
        bar.update(1)
        bar.set_postfix(loss="1.25")
    bar.close()
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n") and "" not in lines
    assert lines[0].startswith("epoch 1/2: 0/4 (0 %)") and lines[-1].startswith("epoch 1/2: 4/4 (100 %)")
    assert "left" in lines[-1] and "loss=1.25" in lines[-1]

    terminal = _Terminal()
    for _ in progress_bar(range(3), desc="files", file=terminal, mininterval=0):
        pass
    assert "\r" in terminal.getvalue()  # redrawn in place


def test_log_lines_come_at_most_every_interval():
    log = io.StringIO()
    for _ in progress_bar(range(10_000), desc="samples", file=log, leave=False):  # default: every 30 s
        pass
    assert log.getvalue().splitlines() == ["samples: 0/10000 (0 %), 00:00 elapsed, ? left, ?it/s"]


def test_disabled_bars_write_nothing_but_still_count():
    log = io.StringIO()
    bar = progress_bar(total=2, file=log, disable=True)
    bar.update(2)
    bar.close()
    assert log.getvalue() == ""


def test_a_piped_training_run_logs_lines_without_carriage_returns(tmp_path, capsys):
    from ikem_train import jobs
    from ikem_train.data.datasets import write_synthetic_store

    store = write_synthetic_store(tmp_path / "s.zarr", n_train=16, n_val=4, frames=20)
    jobs.pretrain(store, "ntu60-xsub", tmp_path / "run", log=lambda *a: None, overrides=[
        "model.hidden_channels=4", "model.hidden_dim=16", "model.feature_dim=8", "model.queue_size=16",
        "data.batch_size=8", "data.num_workers=0", "run.device=cpu", "run.progress=true", "optim.epochs=1",
        "model.modalities=[joint]"])
    err = capsys.readouterr().err
    assert "\r" not in err and "pretrain epoch 1/1: 0/2 (0 %)" in err
