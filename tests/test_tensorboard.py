"""--tensorboard: the per-epoch metrics as TensorBoard event files, read back record by record."""
import importlib.util
import struct

import pytest

from jaxvae import cli
from jaxvae import tensorboard as tb
from jaxvae.runs import read_metrics

TINY = ["--dataset", "digits", "--hidden", "16", "--no-download", "--quiet", "--no-plots", "--epochs", "2"]


def masked_crc(data: bytes) -> int:
    from tensorboardX.crc32c import crc32c

    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_scalars(log_dir) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from every event file in ``log_dir``: the TFRecord framing (length, its CRC,
    data, its CRC) checked as TensorBoard checks it, each record parsed as an Event."""
    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    files = sorted(log_dir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {log_dir}"
    for path in files:
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            header = data[pos:pos + 8]
            (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[pos + 8:pos + 12])
            assert length_crc == masked_crc(header)
            record = data[pos + 12:pos + 12 + length]
            assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == masked_crc(record)
            pos += 16 + length
            event = Event.FromString(record)
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_train_writes_every_epoch_metric(tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    run = tmp_path / "run"
    assert cli.main(["train", *TINY, "--out", str(run), "--tensorboard"]) == 0
    scalars = read_scalars(run / "tensorboard")
    history = read_metrics(run)
    assert {"loss/train", "loss/val", "recon/train", "recon/val", "kl/train", "kl/val", "lr", "kl_weight",
            "seconds"} <= set(scalars)
    for record in history:
        for name, value in record.items():
            if name != "epoch":
                assert scalars[tb.scalar_tag(name)][record["epoch"]] == pytest.approx(value, rel=1e-6)
    # a resumed run appends its epochs in a new event file of the same directory
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet", "--no-plots", "--tensorboard"]) == 0
    assert sorted(read_scalars(run / "tensorboard")["loss/val"]) == [1, 2, 3]


def test_scalar_tags_pair_train_with_validation():
    assert [tb.scalar_tag(n) for n in ("train_loss", "val_loss", "val_kl", "lr", "kl_weight", "seconds")] == [
        "loss/train", "loss/val", "kl/val", "lr", "kl_weight", "seconds"]


def test_without_tensorboardx_the_flag_is_one_line_and_nothing_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)  # as if it were not installed
    assert "pip install 'jaxvae[tensorboard]'" in tb.missing()
    code = cli.main(["train", *TINY, "--out", str(tmp_path / "never"), "--tensorboard"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "jaxvae train: error: --tensorboard: writing TensorBoard event files needs tensorboardX" in err
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_the_logger_is_a_fit_callback(tmp_path, digit_like):
    pytest.importorskip("tensorboardX")
    import jaxvae
    from jaxvae import TrainConfig, VAEConfig

    x = digit_like(64)
    logger = tb.TensorBoardLogger(tmp_path / "tb")
    result = jaxvae.fit(x, vae_config=VAEConfig(hidden=(8,)),
                        train_config=TrainConfig(max_epochs=2, batch_size=32), callbacks=[logger])
    logger.close()
    scalars = read_scalars(tmp_path / "tb")
    assert scalars["loss/train"] == pytest.approx({r["epoch"]: r["train_loss"] for r in result.history}, rel=1e-6)
