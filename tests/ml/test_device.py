"""Where the models run: one device choice for every command, the library and the worker.
The GPU paths themselves are tested beside each model (``test_gpu.py``), on machines with a GPU."""
import pytest
import torch

from ml.device import resolve_device


def test_auto_takes_the_gpu_exactly_when_torch_sees_one(monkeypatch):
    monkeypatch.delenv("LEUKOLAB_DEVICE", raising=False)
    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device(None)
    assert resolve_device("CPU") == torch.device("cpu")


def test_the_environment_chooses_when_no_device_is_given(monkeypatch):
    monkeypatch.setenv("LEUKOLAB_DEVICE", "cpu")
    assert resolve_device() == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")  # an argument wins


@pytest.mark.parametrize("name", ["tpu", "gpu0", "cuda:x", "mps"])
def test_an_unknown_device_is_a_clear_error(name):
    with pytest.raises(ValueError, match="cpu, cuda or cuda:N"):
        resolve_device(name)


def test_a_gpu_the_machine_lacks_is_a_clear_error():
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ValueError, match="GPU"):
        resolve_device(missing)


def test_commands_answer_a_bad_device_with_an_exit_code(tmp_path, capsys):
    from ml.analyze import main as analyze

    assert analyze(["--device", "tpu", str(tmp_path / "x.png")]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_the_classical_localizer_checks_the_device_name_too():
    from ml.localization import load_localizer

    assert load_localizer("classical", device="cpu").method == "classical"
    with pytest.raises(ValueError, match="unknown device"):
        load_localizer("classical", device="tpu")
