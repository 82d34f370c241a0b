"""Search settings are spelled once: the searcher and scheduler names live in their name -> factory
tables, the defaults in `Settings`; the CLI's choices, defaults and the validation read them."""
from dataclasses import asdict

import pytest

from mmsearch import cli
from mmsearch.errors import ConfigError
from mmsearch.search import algorithms
from mmsearch.search.experiment import Settings

from conftest import run_importing_none_of

SEARCH = ["search", "--data", "table.csv", "--space", "space.yaml", "--name", "x"]


def test_the_cli_defaults_are_the_settings_defaults():
    args = vars(cli.build_parser().parse_args(SEARCH))
    assert {k: args[k] for k in asdict(Settings())} == asdict(Settings())


def test_a_searcher_or_scheduler_added_to_its_table_is_a_cli_choice_and_valid(monkeypatch):
    monkeypatch.setitem(algorithms.SEARCHERS, "anneal", algorithms.SEARCHERS["random"])
    monkeypatch.setitem(algorithms.SCHEDULERS, "hyperband", algorithms.SCHEDULERS["fifo"])
    args = cli.build_parser().parse_args(SEARCH + ["--searcher", "anneal", "--scheduler", "hyperband"])
    settings = Settings(searcher=args.searcher, scheduler=args.scheduler)
    assert (settings.searcher, settings.scheduler) == ("anneal", "hyperband")


@pytest.mark.parametrize("field, valid", [("searcher", "tpe, random, grid"), ("scheduler", "asha, fifo"), ("runner", "auto, ray-train")])
def test_an_unknown_name_lists_the_valid_ones(field, valid):
    with pytest.raises(ConfigError, match=f"--{field} 'nope': use one of {valid}"):
        Settings(**{field: "nope"})


def test_search_help_imports_no_search_library():
    run_importing_none_of("from mmsearch import cli\ntry: cli.main(['search', '--help'])\nexcept SystemExit: pass",
                          ("torch", "ray", "optuna"))
