"""lc.pp.split / paper_folds: the reference protocol (lcd-evaluation §2.5), random, custom, JSON."""

import itertools

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import lcdiff as lc
from lcdiff.data.labels import parse_label
from lcdiff.data.splits import Split
from lcdiff.errors import NotPreparedError, SplitError

GENES = [f"G{i:02d}" for i in range(20)]
SINGLES = list(GENES)
DOUBLES = [f"{a}+{b}" for a, b in itertools.combinations(GENES, 2)][:100]
LABELS = ["ctrl", *SINGLES, *DOUBLES]


def test_paper_folds_partition_the_non_validation_doubles():
    folds = lc.pp.paper_folds(LABELS)
    assert [s.fold for s in folds] == ["val", *range(1, 11)]
    val, cv = folds[0], folds[1:]
    val_doubles = set(val.test) | (set(val.train) - {"ctrl", *SINGLES})
    assert len(val_doubles) == 20 and len(val.test) == 10
    tested = [lab for s in cv for lab in s.test]
    assert len(tested) == len(set(tested)) == 80  # every CV double tested exactly once
    assert set(tested) == set(DOUBLES) - val_doubles
    for s in cv:
        assert len(s.test) == 8
        assert set(SINGLES) <= set(s.train) and s.train[0] == "ctrl"
        assert not set(s.train) & set(s.test)
        assert val_doubles <= set(s.train)  # the validation pool always trains
        assert set(s.train) | set(s.test) == set(LABELS)
        assert s.remaining == () and s.dropped == ()
    assert set(SINGLES) <= set(val.train)
    assert not set(val.train) & set(tested)  # fold "val" never touches the CV pool


def test_paper_split_is_the_reference_permutation():
    # The permutation is numpy's default_rng(seed) over the sorted non-control labels.
    perm = [str(x) for x in np.random.default_rng(0).permutation(np.array(sorted(LABELS[1:])))]
    doubles = [lab for lab in perm if "+" in lab]
    chunks = np.array_split(np.array(doubles[20:]), 10)
    for fold in (1, 7, 10):
        assert set(lc.pp.split(LABELS, fold=fold).test) == set(chunks[fold - 1])
    val = lc.pp.split(LABELS, fold="val")
    assert set(val.test) == set(doubles[10:20])
    assert set(val.train) == {"ctrl", *SINGLES, *doubles[:10]}


def test_same_call_twice_same_folds_and_seed_changes_them():
    a = lc.pp.paper_folds(LABELS)
    b = lc.pp.paper_folds(list(reversed(LABELS)))  # input order does not matter
    assert a == b
    c = lc.pp.paper_folds(LABELS, seed=1)
    assert [s.test for s in a] != [s.test for s in c]


def test_sorted_label_lists():
    s = lc.pp.split(LABELS, fold=3)
    keys = [(len(parse_label(lab)), lab) for lab in s.train[1:]]
    assert keys == sorted(keys)
    assert list(s.test) == sorted(s.test)


def test_uncovered_test_doubles_are_dropped():
    # X+Y's genes are trained by no other perturbation: it can never be a paper test double.
    labels = [*LABELS, "X+Y"]
    folds = lc.pp.paper_folds(labels)
    assert all("X+Y" not in s.test for s in folds)
    dropped = [s for s in folds if "X+Y" in s.dropped]
    assert len(dropped) == 1


def test_heldout_singles_mode():
    held = SINGLES[:10]
    folds = lc.pp.paper_folds(LABELS, n_folds=5, n_val=0, heldout_singles=held, include_val=False)
    tested_singles = [lab for s in folds for lab in s.test if "+" not in lab]
    assert sorted(tested_singles) == sorted(held)  # each held-out single tested once
    for s in folds:
        assert not set(held) & set(s.train)
        assert set(s.remaining) == set(held) - set(s.test)
        # a test double is kept only if both genes are trained
        for lab in s.test:
            if "+" in lab:
                assert set(parse_label(lab)) <= {g for t in s.train for g in parse_label(t)}


def test_random_scheme():
    a = lc.pp.split(LABELS, scheme="random", seed=4, test_fraction=0.3)
    assert a == lc.pp.split(LABELS, scheme="random", seed=4, test_fraction=0.3)
    assert a != lc.pp.split(LABELS, scheme="random", seed=5, test_fraction=0.3)
    assert len(a.test) == 30 and all("+" in lab for lab in a.test)
    assert set(SINGLES) <= set(a.train) and a.fold is None
    with pytest.raises(SplitError, match="test_fraction"):
        lc.pp.split(LABELS, scheme="random", test_fraction=1.5)
    with pytest.raises(SplitError, match="has none"):
        lc.pp.split(["ctrl", *SINGLES], scheme="random")


def test_custom_scheme():
    s = lc.pp.split(LABELS, scheme="custom", test=["G01+G00", "G05"])
    assert s.test == ("G05", "G00+G01")
    assert "G05" not in s.train and "G00+G01" not in s.train
    with pytest.raises(SplitError, match="not in the screen"):
        lc.pp.split(LABELS, scheme="custom", test=["NOPE"])
    with pytest.raises(SplitError, match="cannot be a test"):
        lc.pp.split(LABELS, scheme="custom", test=["ctrl"])
    with pytest.raises(SplitError, match="needs test"):
        lc.pp.split(LABELS, scheme="custom")


@pytest.mark.parametrize("fold", [0, 11, "x", True, None])
def test_bad_fold(fold):
    with pytest.raises(SplitError, match="fold must be"):
        lc.pp.split(LABELS, fold=fold)


def test_unknown_scheme_and_empty_test():
    with pytest.raises(SplitError, match="Unknown split scheme"):
        lc.pp.split(LABELS, scheme="loo")
    with pytest.raises(SplitError, match="no test perturbations"):
        lc.pp.split(["ctrl", *SINGLES, *DOUBLES[:22]], fold=5)  # 2 CV doubles, 10 folds


def test_json_round_trip(tmp_path):
    for s in lc.pp.paper_folds(LABELS)[:3] + [lc.pp.split(LABELS, scheme="random")]:
        assert Split.from_json(s.to_json()) == s
    s = lc.pp.split(LABELS, fold=2)
    path = tmp_path / "split.json"
    s.save(path)
    assert Split.load(path) == s
    assert [p.name for p in tmp_path.iterdir()] == ["split.json"]  # no temp file left
    with pytest.raises(SplitError, match="needs the keys"):
        Split.from_json('{"train": []}')
    with pytest.raises(SplitError, match="Not a split"):
        Split.from_json("not json")
    with pytest.raises(SplitError, match="Cannot read"):
        Split.load(tmp_path / "missing.json")


def prepared_like(labels, cells=3) -> AnnData:
    obs = pd.DataFrame({"perturbation": np.repeat(labels, cells)})
    obs.index = obs.index.astype(str)
    a = AnnData(np.ones((len(obs), 2), dtype=np.float32), obs=obs)
    a.uns["lcdiff"] = {"control": "ctrl", "perturbation_key": "perturbation"}
    return a


def test_split_of_a_screen_and_subset():
    screen = prepared_like(LABELS)
    s = lc.pp.split(screen, fold=1)
    assert s == lc.pp.split(LABELS, fold=1)
    train = s.subset(screen, "train")
    test = s.subset(screen, "test")
    assert set(train.obs["perturbation"]) == set(s.train)
    assert set(test.obs["perturbation"]) == set(s.test)
    assert train.n_obs + test.n_obs == screen.n_obs
    with pytest.raises(SplitError, match="part must be"):
        s.subset(screen, "all")
    other = prepared_like(["ctrl", "Z"])
    with pytest.raises(SplitError, match="another screen"):
        s.subset(other, "test")


def test_raw_anndata_is_refused():
    a = prepared_like(LABELS)
    del a.uns["lcdiff"]
    with pytest.raises(NotPreparedError):
        lc.pp.split(a)
