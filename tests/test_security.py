"""Hostile experiment directories: `status`, `ensemble` and `export` read only JSON, CSV, parquet,
safetensors and npy (allow_pickle off) and never run a pickle planted among the files Ray Tune
writes, where Ray's own readers (ExperimentAnalysis) would unpickle it."""
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mmsearch import cli
from mmsearch.search.experiment import Settings
from mmsearch.search.status import trial_states


class Payload:
    """Unpickling this writes a marker file: proof that something ran code from the directory."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker, 0o777, True))  # returns None: whatever unpickled it carries on


def _hex(marker) -> str:
    return pickle.dumps(Payload(marker)).hex()


def _fallback(marker) -> dict:
    """How Ray's TuneFunctionEncoder stores an object JSON cannot hold."""
    return {"_type": "CLOUDPICKLE_FALLBACK", "value": _hex(marker)}


def _plant(exp, marker):
    """An experiment state as Ray Tune 2.x saves it (tune/experiment_state-*.json), for the
    trials under train/, with a payload in every field Ray stores pickled; payload files next to it."""
    # a trial whose predictions file is a pickle (an object array): left out of the pool, not loaded
    evil = exp / "train" / "t_evil"
    shutil.copytree(exp / "train" / "t_lr", evil)
    for preds in evil.rglob("preds_val.npy"):
        np.save(preds, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    tune = exp / "tune"
    tune.mkdir()
    trials = []
    for run in sorted((exp / "train").iterdir()):
        tid = run.name
        trial = {"trial_id": tid, "status": "TERMINATED", "trainable_name": "trial_driver", "relative_logdir": tid,
                 "config": {"trial": {"optim.lr": 0.003}, "evil": _fallback(marker)}, "storage": _fallback(marker),
                 "placement_group_factory": _hex(marker), "results": _hex(marker), "_resources": _hex(marker)}
        meta = {"last_result": {"epoch": 1, "time_total_s": 2.5}, "checkpoint_manager": _fallback(marker),
                "metric_n_steps": {"epoch": {"5": _fallback(marker)}}, "error_filename": None}
        trials.append([json.dumps(trial), json.dumps(meta)])
        (tune / tid).mkdir()
        for name in ("params.pkl", "error.pkl"):
            (tune / tid / name).write_bytes(pickle.dumps(Payload(marker)))
    state = {"trial_data": trials, "runner_data": {"_stopper": _fallback(marker)}, "stats": {}}
    (tune / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    (tune / "tuner.pkl").write_bytes(pickle.dumps(Payload(marker)))


@pytest.fixture
def planted(trained_experiment, tmp_path):
    exp = tmp_path / "exp"
    shutil.copytree(trained_experiment[0], exp)
    Settings().save(exp)
    marker = tmp_path / "PAYLOAD_RAN"
    _plant(exp, marker)
    return exp, marker


def test_the_planted_payload_would_run_if_unpickled(planted):
    exp, marker = planted
    pickle.loads((exp / "tune" / "tuner.pkl").read_bytes())
    assert marker.exists()  # the test's payload is live: its absence below means nothing unpickled it


def test_status_ensemble_export_run_no_planted_pickle(planted, tmp_path, capsys):
    exp, marker = planted
    assert cli.main(["status", str(exp)]) == 0
    assert not marker.exists()
    board = capsys.readouterr().out
    assert "3 with predictions" in board and board.count("TERMINATED") == 4  # t_evil's state is Tune's too
    assert "t_evil" in board and "left out of the pool" in board
    assert cli.main(["ensemble", str(exp)]) == 0
    assert cli.main(["export", str(exp), "--out", str(tmp_path / "bundle")]) == 0
    assert not marker.exists()


def test_trial_states_keep_the_plain_fields_and_drop_pickled_ones(planted):
    exp, marker = planted
    states = trial_states(exp)
    assert sorted(states) == ["t_b4", "t_early", "t_evil", "t_lr"]
    st = states["t_lr"]
    assert st == {"state": "TERMINATED", "error": None, "time_s": 2.5, "epoch": 1, "config": {"trial": {"optim.lr": 0.003}}}
    assert not marker.exists()


def test_status_imports_no_ray(planted):
    code = f"import sys; from mmsearch import cli; cli.main(['status', {str(planted[0])!r}]); assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, capture_output=True)


def test_malformed_experiment_states_are_skipped_not_fatal(planted, capsys):
    exp, _ = planted
    state = next((exp / "tune").glob("experiment_state-*.json"))
    for text in ("{not json", json.dumps({"trial_data": "x"}), json.dumps({"trial_data": [["{}", 3], [1, 2, 3],
                 [json.dumps({"trial_id": "../../x*", "status": "ERROR"}), "{}"]]})):
        state.write_text(text)
        assert trial_states(exp) == {}
        assert cli.main(["status", str(exp)]) == 0
        assert "3 with predictions" in capsys.readouterr().out


def test_resume_help_says_it_unpickles(capsys):
    with pytest.raises(SystemExit):
        cli.main(["resume", "--help"])
    assert "trust" in capsys.readouterr().out


# -- bundles: every file the predictor opens is a checked file inside the bundle ----------------
@pytest.fixture(scope="module")
def bundle(trained_experiment, tmp_path_factory):
    from mmsearch.bundle.export import export_bundle

    root = tmp_path_factory.mktemp("secure_bundle")
    exp = root / "exp"
    shutil.copytree(trained_experiment[0], exp)
    return export_bundle(exp, root / "bundle", log=lambda *_: None)


def _forge(bundle, tmp_path, edit):
    """A copy of the bundle whose manifest `edit` changed, its checksum recomputed (what an
    attacker, not a corrupted disk, would do)."""
    from mmsearch.bundle.manifest import _content_digest

    forged = tmp_path / "forged"
    shutil.copytree(bundle, forged)
    manifest = json.loads((forged / "manifest.json").read_text())
    edit(manifest, forged)
    manifest["manifest_sha256"] = _content_digest(manifest)
    (forged / "manifest.json").write_text(json.dumps(manifest))
    return forged


def _point(key, target):
    def edit(manifest, forged):
        manifest["members"][0][key] = target(forged) if callable(target) else target
    return edit


@pytest.mark.parametrize("key", ["weights", "config_file"])
@pytest.mark.parametrize("target, message", [
    ("../outside/model.safetensors", "not among the bundle's checked `files`"),
    ("/etc/passwd", "not among the bundle's checked `files`"),
    ("members/unlisted.safetensors", "not among the bundle's checked `files`"),
    (None, "not among the bundle's checked `files`"),
])
def test_a_member_path_outside_the_checked_files_is_refused(bundle, tmp_path, key, target, message):
    from mmsearch.bundle import BundleError
    from mmsearch.bundle.predictor import Predictor

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.safetensors").write_bytes((bundle / json.loads((bundle / "manifest.json").read_text())
                                                 ["members"][0]["weights"]).read_bytes())
    forged = _forge(bundle, tmp_path, _point(key, target))
    if target == "members/unlisted.safetensors":
        shutil.copyfile(outside / "model.safetensors", forged / target)
    with pytest.raises(BundleError, match=message) as e:
        Predictor.load(forged, device="cpu")
    assert f"{key} is {target!r}" in str(e.value)


@pytest.mark.parametrize("listed", ["../outside/model.safetensors", "/etc/passwd", "a\\..\\..\\x"])
def test_a_files_entry_outside_the_bundle_is_refused(bundle, tmp_path, listed):
    from mmsearch.bundle import BundleError
    from mmsearch.bundle.predictor import Predictor

    def edit(manifest, forged):
        manifest["files"][listed] = "0" * 64
        manifest["members"][0]["weights"] = listed
    with pytest.raises(BundleError, match="outside the bundle"):
        Predictor.load(_forge(bundle, tmp_path, edit), device="cpu")


def test_a_listed_file_that_links_outside_the_bundle_is_refused(bundle, tmp_path):
    from mmsearch.bundle import BundleError
    from mmsearch.bundle.predictor import Predictor

    outside = tmp_path / "secret.safetensors"
    weights = json.loads((bundle / "manifest.json").read_text())["members"][0]["weights"]
    shutil.copyfile(bundle / weights, outside)  # the same bytes: its checksum matches

    def edit(manifest, forged):
        (forged / weights).unlink()
        (forged / weights).symlink_to(outside)
    with pytest.raises(BundleError, match="leads outside the bundle"):
        Predictor.load(_forge(bundle, tmp_path, edit), device="cpu")


@pytest.mark.parametrize("key", ["members", "files", "schema"])
def test_a_manifest_without_a_required_table_is_refused(bundle, tmp_path, key):
    from mmsearch.bundle import BundleError
    from mmsearch.bundle.predictor import Predictor

    with pytest.raises(BundleError, match=f"lacks its `{key}`"):
        Predictor.load(_forge(bundle, tmp_path, lambda m, _: m.pop(key)), device="cpu")


def test_a_member_without_its_weights_key_is_refused(bundle, tmp_path):
    from mmsearch.bundle import BundleError
    from mmsearch.bundle.predictor import Predictor

    with pytest.raises(BundleError, match="a member lacks weights"):
        Predictor.load(_forge(bundle, tmp_path, lambda m, _: m["members"][0].pop("weights")), device="cpu")


# -- signed bundles (optional): a recomputed checksum is not enough to forge one ------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    pytest.importorskip("cryptography")  # optional (mmsearch[sign]); ray[default] brings it through google-auth
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    root = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("ours", "theirs"):
        key = ed25519.Ed25519PrivateKey.generate()
        (root / f"{name}.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
        (root / f"{name}.pub.pem").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
        out[name] = (root / f"{name}.pem", root / f"{name}.pub.pem")
    return out


@pytest.fixture(scope="module")
def signed(trained_experiment, keys, tmp_path_factory):
    from mmsearch.bundle.export import export_bundle

    root = tmp_path_factory.mktemp("signed")
    exp = root / "exp"
    shutil.copytree(trained_experiment[0], exp)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSEARCH_SIGNING_KEY", str(keys["ours"][0]))
        return export_bundle(exp, root / "bundle", log=lambda *_: None)


def test_a_signed_bundle_loads_with_the_trusted_key(signed, keys, monkeypatch):
    from mmsearch.bundle.predictor import Predictor

    assert (signed / "manifest.sig").is_file()
    monkeypatch.setenv("MMSEARCH_TRUSTED_KEY", str(keys["ours"][1]))
    assert len(Predictor.load(signed, device="cpu").members) >= 1


@pytest.mark.parametrize("case, message", [
    ("forged", "is not a valid signature"),      # manifest edited, checksum recomputed
    ("other_key", "is not a valid signature"),   # trusted key is not the signer's
    ("unsigned", "is not signed"),
    ("garbled", "is not a valid signature"),
])
def test_a_bundle_without_a_valid_signature_is_refused(signed, keys, tmp_path, monkeypatch, case, message):
    from mmsearch.bundle import BundleError
    from mmsearch.bundle.manifest import read_verified

    bundle = signed
    trusted = keys["theirs" if case == "other_key" else "ours"][1]
    if case == "forged":
        bundle = _forge(signed, tmp_path, lambda m, _: m["members"][0].update(weight=0.5))
    elif case in ("unsigned", "garbled"):
        bundle = tmp_path / "copy"
        shutil.copytree(signed, bundle)
        if case == "unsigned":
            (bundle / "manifest.sig").unlink()
        else:
            (bundle / "manifest.sig").write_text("not base64 !!")
    monkeypatch.setenv("MMSEARCH_TRUSTED_KEY", str(trusted))
    with pytest.raises(BundleError, match=message):
        read_verified(bundle)
    monkeypatch.delenv("MMSEARCH_TRUSTED_KEY")
    if case != "forged":
        read_verified(bundle)  # without a trusted key, signatures are not asked for


def test_a_bad_key_file_is_a_clear_error(signed, tmp_path, monkeypatch):
    from mmsearch.bundle import BundleError
    from mmsearch.bundle.manifest import read_verified

    monkeypatch.setenv("MMSEARCH_TRUSTED_KEY", str(tmp_path / "missing.pem"))
    with pytest.raises(BundleError, match="MMSEARCH_TRUSTED_KEY=.*missing.pem: cannot read a PEM key"):
        read_verified(signed)
