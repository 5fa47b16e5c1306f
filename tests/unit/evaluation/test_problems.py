"""The quality problems' own data: what each one promises about its labels."""

import numpy as np

from taskgraph.evaluation import PROBLEMS


def test_digits_scarce_labels_a_few_training_rows_per_task_and_every_validation_and_test_row():
    p = PROBLEMS.get("digits-scarce")
    data = p.data()
    assert data.tasks.names == p.tasks == ("is0", "is2", "is3", "is5", "is6", "is8")
    n_train = len(data.train)
    shares = {}
    for t in p.tasks:
        train_mask = np.asarray(data.train.masks[t], dtype=bool)
        shares[t] = train_mask.mean()
        assert np.asarray(data.val.masks[t], dtype=bool).all() and np.asarray(data.test.masks[t], dtype=bool).all()
        # a one-vs-rest label: about a tenth of the labelled rows are the digit
        y = np.asarray(data.train.labels[t])[train_mask]
        assert set(np.unique(y)) <= {0.0, 1.0} and 0 < y.mean() < 0.3
    assert all(0.02 < s < 0.06 for s in shares.values()), shares  # about 4% of the training rows each
    # each task its own rows: two tasks' labelled rows overlap no more than chance (4% of 4%)
    a, b = (np.asarray(data.train.masks[t], dtype=bool) for t in ("is0", "is2"))
    assert (a & b).sum() < 0.01 * n_train
    # the same rows every time (a fixed label seed): the ground truth's networks all see one problem
    again = PROBLEMS.get("digits-scarce").dataset()
    assert np.array_equal(np.asarray(again.train.masks["is5"]), np.asarray(data.train.masks["is5"]))


def test_digits_attributes_are_unions_of_digit_classes_labelled_on_a_tenth_of_the_training_rows():
    from sklearn.datasets import load_digits

    from taskgraph.data.base import split_indices
    from taskgraph.evaluation.problems import DIGIT_ATTRIBUTES

    p = PROBLEMS.get("digits-attributes")
    data = p.data()
    assert data.tasks.names == p.tasks == tuple(DIGIT_ATTRIBUTES)
    y = load_digits().target
    _, _, test = split_indices(len(y), seed=0)  # the problem's split (seed 0)
    for t, classes in DIGIT_ATTRIBUTES.items():
        # each task's label is "the image's digit is one of these classes", on every test row
        assert np.array_equal(np.asarray(data.test.labels[t]), np.isin(y[test], classes).astype(np.float32)), t
        assert np.asarray(data.test.masks[t], dtype=bool).all()
        share = np.asarray(data.train.masks[t], dtype=bool).mean()
        assert 0.07 < share < 0.13, (t, share)  # about a tenth of the training rows
