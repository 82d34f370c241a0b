"""The registries: lazy discovery, no import circle, one module per trick named after it."""
import subprocess
import sys

import pytest

from mmsearch.registry import ENCODERS, FUSIONS, TRICKS, Registry


def test_the_registry_module_imports_nothing_of_the_project_but_its_errors():
    code = ("import sys, mmsearch.registry as r\n"
            "mine = sorted(m for m in sys.modules if m.startswith('mmsearch'))\n"
            "assert mine == ['mmsearch', 'mmsearch.errors', 'mmsearch.registry'], mine\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_each_registry_discovers_its_package_on_first_use():
    code = ("import sys\nfrom mmsearch.registry import TRICKS, ENCODERS, FUSIONS\n"
            "assert 'mmsearch.tricks.soup' not in sys.modules\n"
            "assert 'soup' in TRICKS.names() and 'mmsearch.tricks.soup' in sys.modules\n"
            "assert 'mmsearch.models.encoders.hf_text' not in sys.modules\n"
            "assert 'minilm' in ENCODERS and 'lf_mlp' in [n for n, _ in FUSIONS]\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.mark.parametrize("name", TRICKS.names())
def test_a_trick_is_registered_under_its_module_name(name):
    assert TRICKS.module_of(name) == f"mmsearch.tricks.{name}"  # grep a name, find its file


@pytest.mark.parametrize("registry", [ENCODERS, FUSIONS, TRICKS], ids=lambda r: r.kind)
def test_entries_live_in_their_registry_package(registry):
    assert all(cls.__module__.startswith(registry.package + ".") for _, cls in registry)


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(ValueError, match="did you mean 'soup'"):
        TRICKS.get("sopu")


def test_a_duplicate_name_warns():
    from dataclasses import dataclass

    reg = Registry("thing", "things", "mmsearch.tricks")

    def make():
        class Thing:
            name = "x"

            @dataclass(frozen=True)
            class Config:
                pass
        return Thing

    reg.register(make())
    with pytest.warns(UserWarning, match="registered twice"):
        reg.register(make())
