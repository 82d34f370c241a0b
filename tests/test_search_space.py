import optuna
import pytest
import yaml

from mmsearch.config import TrialConfig
from mmsearch.errors import ConfigError
from mmsearch.registry import TRICKS
from mmsearch.search.space import SearchSpace



@pytest.mark.parametrize("name", ["bag_of_tricks", "demo", "auto"])
def test_shipped_spaces_parse_and_sample_valid_configs(name):
    space = SearchSpace.load(f"search_spaces/{name}.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        config = space.define_by_run(study.ask())
        TrialConfig.from_flat(config)  # every sampled config is valid


def test_bag_of_tricks_covers_every_registered_trick():
    space = SearchSpace.load("search_spaces/bag_of_tricks.yaml")
    assert {t.name for t in space.tricks} == set(TRICKS.names())


def test_bag_of_tricks_searches_lf_against_lf_aligned():
    space = SearchSpace.load("search_spaces/bag_of_tricks.yaml")
    pair = next(d for d in space.dims if d.key == "model.pair")
    assert pair.values() == ["none", "clip_lite0_minilm"]  # separate towers, or one (offline) pair


def test_trick_params_sampled_only_when_on():
    space = SearchSpace.from_dict({"tricks": {"align_kl": "search"}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        config = space.define_by_run(trial)
        on = config["tricks.align_kl.enabled"]
        seen.add(on)
        assert ("tricks.align_kl.weight" in config) == on
        assert ("tricks.align_kl.weight" in trial.params) == on  # not even suggested when off
    assert seen == {True, False}


def test_grid_enumerates_conditionally():
    space = SearchSpace.from_dict({"search": {"model.fusion": {"choice": ["lf_mlp", "early"]}},
                                   "tricks": {"soup": {"enabled": {"choice": [False, True]}, "method": {"grid": ["greedy", "best"]}}}})
    grid = space.grid()
    assert len(grid) == 2 * (1 + 2)  # fusion x (soup off | soup on x 2 methods)
    assert sum(1 for c in grid if not c["tricks.soup.enabled"] and "tricks.soup.method" in c) == 0


def test_grid_rejects_continuous_dimensions():
    with pytest.raises(ConfigError, match="cannot be grid-searched"):
        SearchSpace.from_dict({"search": {"optim.lr": {"loguniform": [1e-4, 1e-3]}}}).grid()


@pytest.mark.parametrize("data,message", [
    ({"search": {"optim.lrr": {"choice": [1e-3]}}}, "unknown config key 'optim.lrr'.*did you mean 'optim.lr'"),
    ({"tricks": {"sopu": "search"}}, "unknown trick 'sopu'.*did you mean 'soup'"),
    ({"tricks": {"soup": {"methd": {"choice": ["greedy"]}}}}, "unknown config key 'tricks.soup.methd'"),
    ({"search": {"optim.lr": {"logunifrom": [1e-4, 1e-3]}}}, "unknown dimension kind 'logunifrom'"),
    ({"search": {"optim.lr": {"uniform": [1e-3, 1e-4]}}}, "low < high"),
    ({"search": {"model.fusion": {"choice": ["lf_mlp", "late"]}}}, "unknown fusion 'late'"),
    ({"search": {"train.epochs": {"uniform": [1, 3]}}}, "train.epochs=1.0 should be int"),
    ({"serach": {}}, "unknown section 'serach'"),
    ({"fixed": {"optim.lr": 1e-3}, "search": {"optim.lr": {"choice": [1e-3]}}}, "both fixed and searched"),
])
def test_typos_rejected_before_anything_runs(data, message):
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_dict(data)


def test_load_reports_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"tricks": {"grad_clip": {"max_norm": {"choice": [1.0, "big"]}}}}))
    with pytest.raises(ConfigError, match=r"bad.yaml.*tricks.grad_clip.max_norm='big' should be float"):
        SearchSpace.load(path)


@pytest.mark.parametrize("section, key, value", [
    ("fixed", "tricks.soup.enabled", True),
    ("fixed", "tricks.soup.method", "best"),
    ("search", "tricks.soup.method", {"choice": ["greedy", "best"]}),
])
def test_a_trick_set_in_two_places_names_both(section, key, value):
    with pytest.raises(ConfigError, match=rf"'soup' is set in two places, {section}: {key} and tricks: soup"):
        SearchSpace.from_dict({section: {key: value}, "tricks": {"soup": "search"}})


def test_a_trick_set_in_fixed_alone_is_fine():
    space = SearchSpace.from_dict({"fixed": {"tricks.soup.enabled": True, "tricks.soup.method": "best"},
                                   "tricks": {"grad_clip": "search"}})
    assert space.grid()[0]["tricks.soup.method"] == "best"


# A shipped space may search a trick's parameter over other values than the trick's own `space`
# only on purpose: trick name -> the reason (also written next to the entry in the YAML).
DIFFERS_ON_PURPOSE: dict[str, str] = {}


@pytest.mark.parametrize("name", ["bag_of_tricks", "demo"])
def test_shipped_spaces_search_tricks_over_their_own_space(name):
    space = SearchSpace.load(f"search_spaces/{name}.yaml")
    for t in space.tricks:
        if t.name in DIFFERS_ON_PURPOSE:
            continue
        own = {f"tricks.{t.name}.{k}": (kind, tuple(args)) for k, spec in TRICKS.get(t.name).space.items() for kind, args in spec.items()}
        searched = {d.key: (d.kind, d.args) for d in t.dims}
        assert searched == own, f"{name}.yaml searches {t.name} over {searched}, its own space is {own}"


def test_overrides_fix_keys_on_top_of_a_space():
    from mmsearch.search.space import with_overrides

    data = yaml.safe_load(open("search_spaces/bag_of_tricks.yaml"))
    space = SearchSpace.from_dict(with_overrides(data, {
        "optim.lr": 1e-3,                           # searched in the file: now fixed
        "train.epochs": 2,                          # fixed in the file: replaced
        "tricks.align_kl.weight": 0.5,              # a trick searched in `tricks:`: its parameter fixed
        "tricks.soup.enabled": False,               # switched off
        "tricks.modality_dropout.enabled": True,    # switched on, its parameters still searched
    }))
    assert "optim.lr" not in {d.key for d in space.dims}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        config = space.define_by_run(study.ask())
        assert config["optim.lr"] == 1e-3 and config["train.epochs"] == 2
        assert not config["tricks.soup.enabled"] and config["tricks.modality_dropout.enabled"]
        assert 0.1 <= config["tricks.modality_dropout.p"] <= 0.5
        if config["tricks.align_kl.enabled"]:
            assert config["tricks.align_kl.weight"] == 0.5
    with pytest.raises(ConfigError, match="model.imagesize"):  # typos still caught, with the valid keys
        SearchSpace.from_dict(with_overrides(data, {"model.imagesize": 64}))
