"""e-prop learns the smoke task well above chance; without learning it does not."""

from s2emu.runner import run

from conftest import smoke, with_learning


def test_eprop_learns_smoke_well_above_chance():
    r = run(smoke(epochs=6, batch=8))
    assert r["chance"] == 0.25
    assert r["accuracy"] >= 0.7, r["accuracy"]
    assert r["balanced_accuracy"] >= 0.7
    curve = [p["loss"] for p in r["train_curve"]]
    assert curve[-1] < 0.6 * curve[0], curve


def test_without_learning_stays_near_chance():
    r = run(with_learning(smoke(epochs=6, batch=8), rule="none"))
    assert r["accuracy"] < 0.5, r["accuracy"]


def test_online_signal_and_random_feedback_also_learn():
    r = run(with_learning(smoke(epochs=6, batch=8), signal="online", feedback="random"))
    assert r["accuracy"] >= 0.5, r["accuracy"]
