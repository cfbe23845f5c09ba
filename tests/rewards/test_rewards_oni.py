"""ONI (arXiv 2410.23022): intrinsic reward models learned online from a judge's labels of the agent's turns.

Hand-built batches carry the multi-turn rollout's ``extras["episodes"]`` (``agents.episodes.Episode``:
actions, observations, infos per turn); the rule-based judge reads ``info["useful"]``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from entrolab.agents.episodes import Episode
from entrolab.registry import REWARDS
from entrolab.rewards.compose import RewardError, compute_rewards
from entrolab.rewards.oni import OniReward, batch_turns
from entrolab.rewards.oni_judges import HttpJudge, JudgeError, Turn, UsefulJudge
from entrolab.rewards.oni_models import (ClassifierModel, HashingModel, RankingModel, bradley_terry_step,
                                         count_discounts, featurize, hashed_ngrams, logistic_step,
                                         merge_moments, normalize_sparsify, preference_from_labels,
                                         text_key)


def ep(*turns):
    """``ep(("<guess>5</guess>", "higher", True), ...)``; useful None = no ``useful`` key in info."""
    return Episode(actions=[a for a, _, _ in turns], observations=[o for _, o, _ in turns],
                   rewards=[0.0] * len(turns),
                   infos=[{} if u is None else {"useful": u, "tool_call": True} for _, _, u in turns])


G5, G9, ANS = ("<guess>5</guess>", "higher", True), ("<guess>9</guess>", "lower", False), ("<answer>7</answer>", "", None)


def episodic_batch(make_batch, episodes, *, step=0):
    b = make_batch([0.0] * len(episodes), list(range(len(episodes))), texts=[e.actions[-1] if e.actions else ""
                                                                              for e in episodes])
    b.extras["episodes"] = episodes
    b.step = step
    return b


# -- pure math ---------------------------------------------------------------------------------------
def test_hashed_ngrams_counts_grams_and_normalises():
    """"aab" with n=2 has grams a, a, b, aa, ab: counts 2, 1, 1, 1 in four buckets (no collision in 2^20),
    divided by the L2 norm √7; no 3-gram; n=1 keeps the unigrams only (2, 1)/√5."""
    x = hashed_ngrams("aab", dim=2 ** 20, n=2)
    assert x.dtype == torch.float64
    assert sorted(x[x != 0].tolist()) == pytest.approx([1 / math.sqrt(7)] * 3 + [2 / math.sqrt(7)])
    x1 = hashed_ngrams("aab", dim=2 ** 20, n=1)
    assert sorted(x1[x1 != 0].tolist()) == pytest.approx([1 / math.sqrt(5), 2 / math.sqrt(5)])
    assert torch.equal(hashed_ngrams("", dim=8, n=3), torch.zeros(8, dtype=torch.float64))
    assert featurize([], dim=8, n=3).shape == (0, 8) and featurize([], dim=8, n=3).dtype == torch.float64
    assert torch.equal(featurize(["aab"], dim=2 ** 20, n=2), x[None])


def test_text_key_is_a_stable_8_byte_blake2b():
    """Checkpointed tables are keyed by it: it must not change between processes or versions."""
    assert text_key("ab") == hashlib.blake2b("ab".encode("utf-8"), digest_size=8).hexdigest()
    assert text_key("é") == hashlib.blake2b(b"\xc3\xa9", digest_size=8).hexdigest() and len(text_key("")) == 16


def test_count_discounts_are_episodic_inverse_powers():
    """keys a, a, b, a with β=3: N = 1, 2, 1, 3 → 1, 1/8, 1, 1/27; β=0 switches it off."""
    assert count_discounts(["a", "a", "b", "a"], exponent=3.0) == pytest.approx([1, 1 / 8, 1, 1 / 27])
    assert count_discounts(["a", "a"], exponent=0.0) == [1.0, 1.0]


def test_classifier_gradient_step_by_hand_on_two_examples():
    """w=(0.5, 0), b=0.2, x1=(1, 2) y1=1, x2=(3, −1) y2=0, lr 0.1.

    z = x·w + b = (0.7, 1.7), p = σ(z) = (0.6681878, 0.8455347), g = p − y = (−0.3318122, 0.8455347);
    ∂w = (x1 g1 + x2 g2)/2 = ((−0.3318122 + 2.5366042)/2, (−0.6636244 − 0.8455347)/2) = (1.1023960, −0.7545796)
    w' = w − 0.1 ∂w = (0.3897604, 0.0754580); b' = 0.2 − 0.1 · mean(g) = 0.2 − 0.0256861 = 0.1743139;
    loss = (−ln 0.6681878 − ln 0.1544653)/2 = (0.4031860 + 1.8677860)/2 = 1.1354860.
    """
    w, b, loss = logistic_step(torch.tensor([0.5, 0.0], dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64),
                               torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64),
                               torch.tensor([1.0, 0.0], dtype=torch.float64), lr=0.1)
    assert w.tolist() == pytest.approx([0.38976040, 0.07545796], abs=1e-7)
    assert float(b) == pytest.approx(0.17431387, abs=1e-7)
    assert loss == pytest.approx(1.13548604, abs=1e-7)


def test_ranking_bradley_terry_update_by_hand():
    """w=(0.5, 0), pair 1: a=(1,0) b=(0,1) p=1; pair 2: a=(0,2) b=(1,0) p=0.5 (a tie); lr 0.5.

    d1 = 0.5, (σ(d1) − 1)(a−b) = −0.3775407·(1, −1); d2 = −0.5, (σ(d2) − 0.5)(a−b) = −0.1224593·(−1, 2);
    grad = mean = (−0.1275407, 0.0663110); w' = w − 0.5 grad = (0.5637703, −0.0331555);
    loss = (−ln σ(0.5) + ½(−ln σ(−0.5) − ln σ(0.5)))/2 = (0.4740770 + 0.7240770)/2 = 0.5990770.
    """
    w, loss = bradley_terry_step(torch.tensor([0.5, 0.0], dtype=torch.float64),
                                 torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64),
                                 torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64),
                                 torch.tensor([1.0, 0.5], dtype=torch.float64), lr=0.5)
    assert w.tolist() == pytest.approx([0.56377033, -0.03315550], abs=1e-7)
    assert loss == pytest.approx(0.59907698, abs=1e-7)


def test_preference_from_two_labels():
    assert [preference_from_labels(1, 0), preference_from_labels(0, 1), preference_from_labels(1, 1),
            preference_from_labels(0.5, 0)] == [1.0, 0.0, 0.5, 0.75]


def test_models_update_with_the_step_functions_on_their_dataset():
    """The classifier refits on every label so far (two updates = steps on [ex1], then on [ex1, ex2])."""
    m = ClassifierModel(dim=16, n=2, lr=0.5, steps=2, threshold=None, max_examples=10)
    m.update(["ab"], [1.0])
    metrics = m.update(["ba"], [0.0])
    w, b = torch.zeros(16, dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    x1, x12 = featurize(["ab"], dim=16, n=2), featurize(["ab", "ba"], dim=16, n=2)
    losses = []
    for x, y in ((x1, [1.0]), (x1, [1.0]), (x12, [1.0, 0.0]), (x12, [1.0, 0.0])):
        w, b, loss = logistic_step(w, b, x, torch.tensor(y, dtype=torch.float64), lr=0.5)
        losses.append(loss)
    assert torch.equal(m.w_D, w) and torch.equal(m.b, b) and m.b.dtype == torch.float64
    assert metrics == {"oni/model_loss": losses[2], "oni/dataset_size": 2.0, "oni/dataset_dropped": 0.0}
    p = torch.sigmoid(x12 @ w + b).tolist()
    assert m.score(["ab", "ba"]).tolist() == p and p[0] > p[1]
    m.threshold = p[1]  # the reward is 1[p > threshold], strictly
    assert m.score(["ab", "ba"]).tolist() == [1.0, 0.0] and m.score(["ab"]).dtype == torch.float64
    r = RankingModel(dim=16, n=2, lr=0.5, steps=2, max_examples=1, normalize=False, threshold=None)
    metrics = r.update([("ab", "ba"), ("ba", "ab")], [1.0, 0.0])  # cap 1: the first pair is dropped
    xa, xb, p0 = featurize(["ba"], dim=16, n=2), featurize(["ab"], dim=16, n=2), torch.tensor([0.0], dtype=torch.float64)
    wr, loss0 = bradley_terry_step(torch.zeros(16, dtype=torch.float64), xa, xb, p0, lr=0.5)
    wr, _ = bradley_terry_step(wr, xa, xb, p0, lr=0.5)
    assert torch.equal(r.w_D, wr) and r.data.items == [(("ba", "ab"), 0.0)]
    assert metrics == {"oni/model_loss": loss0, "oni/dataset_size": 1.0, "oni/dataset_dropped": 1.0}
    h = HashingModel()
    assert h.score(["x"]).tolist() == [0.0] and h.update(["x"], [1.0]) == {"oni/table_size": 1.0}
    assert h.score(["x", "y"]).tolist() == [1.0, 0.0] and h.score(["x"]).dtype == torch.float64
    assert h.rewards(["y", "x", "x"]).tolist() == [0.0, 1.0, 1.0] and h.rewards(["x"]).dtype == torch.float64
    assert HashingModel(unseen=0.25).score(["y"]).tolist() == [0.25]


# -- the term ----------------------------------------------------------------------------------------
def test_hashing_table_values_by_hand(make_batch):
    """lag 0, coef 2, β 1. Row 0: G5 (useful), G5 again, answer (no key → 0): 2·(1 + 1/2 + 0) = 3.
    Row 1: G9 (not useful) → 0. The table holds one label per distinct turn text; mean placement
    gives 3/3 = 1 for row 0."""
    b = episodic_batch(make_batch, [ep(G5, G5, ANS), ep(G9)])
    r = OniReward(variant="hashing", lag=0, coef=2.0, count_exponent=1.0)
    vals, m = r(b, None)
    assert vals.tolist() == [3.0, 0.0]
    key = lambda t: text_key(f"{t[0]}\n{t[1]}")  # noqa: E731
    assert r.model.table == {key(G5): 1.0, key(ANS): 0.0, key(G9): 0.0}
    assert m["oni/annotated"] == 3.0 and m["oni/turn_nonzero_frac"] == 0.5
    r_mean = OniReward(variant="hashing", lag=0, coef=2.0, count_exponent=1.0, aggregate="mean")
    assert r_mean(b, None)[0].tolist() == [1.0, 0.0]


def test_hashing_asks_the_judge_once_per_distinct_text(make_batch):
    seen = []

    class Recording(UsefulJudge):
        def __call__(self, turns):
            seen.append([t.action for t in turns])
            return super().__call__(turns)

    r = OniReward(variant="hashing", lag=0)
    r.judge = Recording()
    r(episodic_batch(make_batch, [ep(G5, G5, ANS), ep(G5)]), None)
    r(episodic_batch(make_batch, [ep(G5, G9)], step=1), None)
    assert seen == [["<guess>5</guess>", "<answer>7</answer>"], ["<guess>9</guess>"]]


def test_text_choice_and_single_turn_fallback(make_batch):
    """Without episodes each completion is one turn (empty observation, empty info → 'missing' label)."""
    b = make_batch([0.0, 1.0], [0, 1], texts=["abc", "xyz"])
    assert batch_turns(b) == [[Turn("abc", "", {})], [Turn("xyz", "", {})]]
    r = OniReward(variant="hashing", lag=0, text="action", judge_args={"missing": 1.0})
    assert r(b, None)[0].tolist() == [1.0, 1.0]
    assert r.turn_text(Turn("a", "o")) == "a" and OniReward(text="observation").turn_text(Turn("a", "o")) == "o"


def test_lag_labels_are_not_used_before_t_plus_lag(make_batch):
    """lag 2: the labels of step 0 reach the model at step 2 even though the judge finished long before."""
    r = OniReward(variant="hashing", lag=2, count_exponent=0.0)
    out = []
    for step in range(4):
        out.append(r(episodic_batch(make_batch, [ep(G5)], step=step), None)[0].item())
        time.sleep(0.05)  # the judge thread is done by now: still not applied before step 2
    assert out == [0.0, 0.0, 1.0, 1.0]


class SlowJudge(UsefulJudge):
    """The rule-based judge, but each call takes a different time (slower than a step)."""

    def __init__(self, delays):
        super().__init__()
        self.delays = list(delays)

    def __call__(self, turns):
        time.sleep(self.delays.pop(0) if self.delays else 0.0)
        return super().__call__(turns)


def _trajectory(make_batch):
    """Six steps of batches with new turns every step (so annotation keeps going)."""
    steps = []
    for s in range(6):
        steps.append([ep((f"<guess>{s}</guess>", "higher" if s % 2 else "lower", bool(s % 2)), G5, ANS),
                      ep((f"<calc>{s}+1</calc>", f"{s + 1}", True), G9)])
    return steps


@pytest.mark.parametrize("variant", ["hashing", "classification", "ranking"])
def test_lag_is_deterministic_with_a_slow_judge(make_batch, variant):
    """The same rewards at every step whether the judge answers at once or later than the next step."""
    def run(judge):
        r = OniReward(variant=variant, lag=1, dim=64, threshold=None)
        if judge is not None:
            r.judge = judge
        return [r(episodic_batch(make_batch, eps, step=s), None)[0].tolist()
                for s, eps in enumerate(_trajectory(make_batch))]

    fast, slow = run(None), run(SlowJudge([0.2, 0.0, 0.15, 0.3]))
    assert fast == slow
    assert any(v != 0 for row in fast[2:] for v in row)  # the model did learn something


@pytest.mark.parametrize("variant", ["hashing", "classification", "ranking"])
def test_state_round_trip_resumes_exactly_with_pending_annotations(make_batch, variant):
    """Save after step 2 with lag 2 (steps 1 and 2 still pending, the judge slow), load into a fresh term
    through torch.save/torch.load(weights_only=True): steps 3..5 equal the uninterrupted run."""
    traj = _trajectory(make_batch)
    make = lambda: OniReward(variant=variant, lag=2, dim=64, threshold=None, seed=3)  # noqa: E731
    full = make()
    want = [(v.tolist(), m) for v, m in (full(episodic_batch(make_batch, eps, step=s), None)
                                         for s, eps in enumerate(traj))]
    first = make()
    first.judge = SlowJudge([0.0, 0.0, 0.3])
    for s in range(3):
        first(episodic_batch(make_batch, traj[s], step=s), None)
    state = first.state_dict()
    assert [p["step"] for p in state["pending"]] == [1, 2] and all(p["labels"] for p in state["pending"])
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    second = make()
    second.load_state_dict(torch.load(buf, weights_only=True))
    got = [(v.tolist(), m) for v, m in (second(episodic_batch(make_batch, traj[s], step=s), None)
                                        for s in range(3, 6))]
    assert got == want[3:]
    with pytest.raises(ValueError, match="checkpoint holds"):
        OniReward(variant="hashing" if variant != "hashing" else "ranking").load_state_dict(state)


def test_ranking_pairs_and_derived_preferences(make_batch):
    """lag 0, β 0: one pair of the two distinct texts, P(G5 ≻ G9) = 1 from labels (1, 0), one BT step
    from w = 0: R(G5) > 0 > R(G9), symmetric (R(G5) = −R(G9) since both feature vectors are unit norm).
    Normalised (default): running mean 0, variance R², so z = (1, −1) and −1 < −0.5 is cut to 0."""
    raw = OniReward(variant="ranking", lag=0, count_exponent=0.0, sgd_steps=1, dim=4096, rank_normalize=False)
    vals, m = raw(episodic_batch(make_batch, [ep(G5), ep(G9)]), None)
    assert len(raw.model.data.items) == 1
    (pair, p), = raw.model.data.items
    assert p == (1.0 if pair[0].startswith("<guess>5") else 0.0)
    assert vals[0] > 0 > vals[1] and float(vals[0]) == pytest.approx(-float(vals[1]), rel=1e-6)
    norm = OniReward(variant="ranking", lag=0, count_exponent=0.0, sgd_steps=1, dim=4096)
    assert norm(episodic_batch(make_batch, [ep(G5), ep(G9)]), None)[0].tolist() == pytest.approx([1.0, 0.0])
    count, mean, var = norm.model.moments
    assert count == 2 and mean == pytest.approx(0.0, abs=1e-12) and var == pytest.approx(float(vals[0]) ** 2)


def test_running_moments_and_sparsified_normalisation_by_hand():
    """(0, 0, 0) + [1, 3] → (2, 2, 1); + [5] → δ = 3, mean 2 + 3/3 = 3, var (1·2 + 0 + 9·2·1/3)/3 = 8/3,
    the moments of [1, 3, 5]; + [5, 7] instead → δ = 4, mean 2 + 4·2/4 = 4, var (2 + 2 + 16·2·2/4)/4 = 5,
    the moments of [1, 3, 5, 7]. z of [0, 1.5, 1.8, 6] under mean 3, var 9: (−1, −0.5, −0.4, 1); threshold
    −0.5 zeroes −1 and −0.5 (strictly above is kept)."""
    state = merge_moments(0, 0.0, 0.0, torch.tensor([1.0, 3.0]))
    assert state == (2, 2.0, 1.0)
    assert merge_moments(*state, torch.tensor([5.0])) == pytest.approx((3, 3.0, 8 / 3))
    assert merge_moments(*state, torch.tensor([5.0, 7.0])) == pytest.approx((4, 4.0, 5.0))
    assert merge_moments(*state, torch.zeros(0)) == state
    x = torch.tensor([0.0, 1.5, 1.8, 6.0], dtype=torch.float64)
    assert normalize_sparsify(x, mean=3.0, var=9.0, threshold=-0.5, eps=0.0).tolist() == pytest.approx([0.0, 0.0, -0.4, 1.0])
    assert normalize_sparsify(x, mean=3.0, var=9.0, threshold=None).tolist() == pytest.approx([-1.0, -0.5, -0.4, 1.0])
    assert normalize_sparsify(x, mean=3.0, var=0.0, threshold=None, eps=0.25).tolist() == pytest.approx(
        [-6.0, -3.0, -2.4, 6.0])
    m = RankingModel(dim=8, n=1, lr=1.0, steps=1, max_examples=4, normalize=True, threshold=None)
    m.w_D = torch.arange(8, dtype=torch.float64)
    r1 = m.score(["a", "b"])
    out = m.rewards(["a", "b", "a"])  # repeats count in the moments: this batch is R(a), R(b), R(a)
    assert out.dtype == torch.float64
    want = torch.stack([r1[0], r1[1], r1[0]])
    assert m.moments == pytest.approx((3, float(want.mean()), float(want.var(unbiased=False))))
    assert out.tolist() == pytest.approx(((want - want.mean()) / (want.var(unbiased=False) + 1e-8) ** 0.5).tolist())


def test_registered_and_composes_with_the_verifier(make_batch):
    b = episodic_batch(make_batch, [ep(G5), ep(G9)])
    term = REWARDS.build("oni", {"variant": "hashing", "lag": 0, "coef": 0.5})
    total, metrics = compute_rewards(b, None, [("verifier", 1.0, lambda bb, t: ([1.0, 0.0], {})),
                                               ("oni", 2.0, term)])
    assert total.tolist() == [1.0 + 2.0 * 0.5, 0.0] and metrics["reward/oni"] == 0.25


# -- errors ------------------------------------------------------------------------------------------
def test_bad_inputs_are_errors_naming_the_place(make_batch):
    b = episodic_batch(make_batch, [ep(G5), Episode(actions=["a", "b"], observations=["x"], infos=[{}, {}])])
    with pytest.raises(RewardError, match="episode of row 1 has 2 actions, 1 observations"):
        OniReward(lag=0)(b, None)
    strict = OniReward(lag=0, judge_args={"missing": None})
    with pytest.raises(RewardError, match=r"judge 'useful' failed on the turns of step 0: .*turn 1 .*answer>7"):
        strict(episodic_batch(make_batch, [ep(G5, ANS)]), None)
    bad = OniReward(lag=0)
    bad.judge = lambda turns: [2.0] * len(turns)
    with pytest.raises(RewardError, match=r"returned label 2.0 at index 0"):
        bad(episodic_batch(make_batch, [ep(G5)]), None)
    with pytest.raises(ValueError, match="unknown key 'judge_args.endpont'.*Did you mean 'endpoint'"):
        OniReward(judge="http", judge_args={"endpont": "http://x"})
    with pytest.raises(JudgeError, match="expected a bool"):
        UsefulJudge()([Turn("a", "o", {"useful": "yes"})])
    assert OniReward(judge="entrolab.rewards.oni_judges:UsefulJudge").judge([Turn("a", "o", {"useful": True})]) == [1.0]


# -- HTTP judge --------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.requests.append((self.path, body))
        if self.path == "/slow":
            time.sleep(1.0)
        if self.path == "/notjson":
            out = b"<html>oops</html>"
        elif self.path == "/short":
            out = json.dumps({"labels": []}).encode()
        elif body["kind"] == "label":
            out = json.dumps({"labels": [1 if t["observation"] == "higher" else 0 for t in body["turns"]]}).encode()
        else:
            out = json.dumps({"preferences": [0.5 for _ in body["pairs"]]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            self.wfile.write(out)
        except OSError:  # the client gave up (timeout test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_judge_speaks_the_documented_json(make_batch, judge_server):
    r = OniReward(variant="hashing", lag=0, count_exponent=0.0,
                  judge="http", judge_args={"endpoint": judge_server + "/judge", "batch_size": 2})
    vals, _ = r(episodic_batch(make_batch, [ep(G5, ANS), ep(G9)]), None)
    assert vals.tolist() == [1.0, 0.0]
    assert _Handler.requests == [  # 3 distinct turns in chunks of 2
        ("/judge", {"kind": "label", "turns": [{"action": "<guess>5</guess>", "observation": "higher"},
                                               {"action": "<answer>7</answer>", "observation": ""}]}),
        ("/judge", {"kind": "label", "turns": [{"action": "<guess>9</guess>", "observation": "lower"}]})]
    prefs = HttpJudge(endpoint=judge_server + "/judge").compare([(Turn("a", "b"), Turn("c", "d"))])
    assert prefs == [0.5] and _Handler.requests[-1][1] == {
        "kind": "compare", "pairs": [[{"action": "a", "observation": "b"}, {"action": "c", "observation": "d"}]]}


def test_http_judge_timeout_and_bad_answers_name_the_endpoint(make_batch, judge_server):
    slow = judge_server + "/slow"
    r = OniReward(lag=0, judge="http", judge_args={"endpoint": slow, "timeout": 0.2})
    t0 = time.monotonic()
    with pytest.raises(RewardError, match=f"ONI judge endpoint {slow} did not answer within 0.2 s"):
        r(episodic_batch(make_batch, [ep(G5)]), None)
    assert time.monotonic() - t0 < 0.9
    with pytest.raises(JudgeError, match=f"endpoint {judge_server}/notjson answered with a body that is not JSON"):
        HttpJudge(endpoint=judge_server + "/notjson")([Turn("a", "b")])
    with pytest.raises(JudgeError, match=f"endpoint {judge_server}/short returned 0 values, expected a list of 1"):
        HttpJudge(endpoint=judge_server + "/short")([Turn("a", "b")])
    with pytest.raises(JudgeError, match="endpoint http://127.0.0.1:9/ failed"):
        HttpJudge(endpoint="http://127.0.0.1:9/", timeout=2)([Turn("a", "b")])


# -- configuration, metrics, the ranking queue -------------------------------------------------------
@pytest.mark.parametrize("key,bad,good", [("lag", -1, 0), ("count_exponent", -0.5, 0.0), ("dim", 0, 1),
                                          ("ngram", 0, 1), ("sgd_steps", 0, 1), ("max_examples", 0, 1),
                                          ("wait_timeout", 0.0, 0.01)])
def test_out_of_range_hyperparameters_are_refused_by_name(key, bad, good):
    with pytest.raises(ValueError, match=f"^{key} must be"):
        OniReward(**{key: bad})
    OniReward(**{key: good})


def test_each_variant_builds_its_model():
    assert isinstance(OniReward(variant="hashing").model, HashingModel)
    c = OniReward(variant="classification", threshold=0.25, dim=8, ngram=2, lr=0.5, sgd_steps=3, max_examples=7)
    assert isinstance(c.model, ClassifierModel)
    assert (c.model.dim, c.model.n, c.model.lr, c.model.steps, c.model.threshold, c.model.data.max_examples) == (
        8, 2, 0.5, 3, 0.25, 7)
    r = OniReward(variant="ranking", rank_normalize=False, rank_threshold=None, dim=8, max_examples=5)
    assert isinstance(r.model, RankingModel) and (r.model.normalize, r.model.threshold, r.model.dim) == (False, None, 8)
    assert OniReward(variant="ranking").model.threshold == -0.5 and OniReward(unseen=0.5).model.unseen == 0.5


def test_metrics_by_hand_with_an_abstaining_judge(make_batch):
    """lag 1, β 0, mean placement. Step 0: three distinct texts sent, nothing applied yet, all rewards 0.
    Step 1: labels (1, None, 0) of step 0 applied — 2 kept (mean 0.5), 1 abstention; rows: [G5, G9, ANS]
    → mean(1, 0, 0) = 1/3, [] → 0 (an empty episode), [G5] → 1; turns 4, nonzero 2 of 4 with mean 2/4."""
    r = OniReward(variant="hashing", lag=1, count_exponent=0.0, aggregate="mean")
    r.judge = lambda turns: [{"<guess>5</guess>": 1.0, "<guess>9</guess>": None}.get(t.action, 0.0) for t in turns]
    eps = [ep(G5, G9, ANS), Episode(), ep(G5)]
    vals0, m0 = r(episodic_batch(make_batch, eps, step=0), None)
    assert vals0.tolist() == [0.0, 0.0, 0.0]
    assert m0 == {"oni/applied": 0.0, "oni/applied_label_mean": 0.0, "oni/annotated": 0.0, "oni/abstained": 0.0,
                  "oni/pending_steps": 1.0, "oni/turn_reward_mean": 0.0, "oni/turn_nonzero_frac": 0.0}
    vals1, m1 = r(episodic_batch(make_batch, eps, step=1), None)
    assert vals1.tolist() == pytest.approx([1 / 3, 0.0, 1.0]) and vals1.dtype == torch.float32
    assert m1 == {"oni/applied": 2.0, "oni/applied_label_mean": 0.5, "oni/table_size": 2.0, "oni/annotated": 2.0,
                  "oni/abstained": 1.0, "oni/pending_steps": 0.0, "oni/turn_reward_mean": 0.5,
                  "oni/turn_nonzero_frac": 0.5}
    m2 = r(episodic_batch(make_batch, [Episode()], step=2), None)[1]
    assert (m2["oni/turn_reward_mean"], m2["oni/turn_nonzero_frac"]) == (0.0, 0.0)


def test_jobs_of_two_steps_applied_in_one_call_add_up(make_batch):
    """lag 2, steps 0 and 1 played, then step 3: both jobs are due and applied oldest first (3 + 1 labels);
    rows of lengths 3, 1, 2 are cut from the flat turn list at the right places."""
    r = OniReward(variant="hashing", lag=2, count_exponent=0.0)
    r(episodic_batch(make_batch, [ep(G5, G9, ANS)], step=0), None)
    r(episodic_batch(make_batch, [ep(("<calc>1+1</calc>", "= 2", True))], step=1), None)
    vals, m = r(episodic_batch(make_batch, [ep(G9, G9, G5), ep(G5), ep(ANS, G5)], step=3), None)
    assert (m["oni/applied"], m["oni/annotated"], m["oni/applied_label_mean"]) == (4.0, 4.0, 0.5)
    assert vals.tolist() == [1.0, 1.0, 1.0]
    vals, _ = r(episodic_batch(make_batch, [ep(G9, G9, G9), ep(G5), ep(G5, ANS)], step=4), None)
    assert vals.tolist() == [0.0, 1.0, 1.0]


def test_ranking_queue_pairs_disjointly_and_uses_the_judges_compare(make_batch):
    """Five distinct texts → two disjoint pairs (the fifth waits for no one); a judge with ``compare`` is
    asked for the pairs; without it, pairs are derived from labels and an abstention drops its pair."""
    asked = []

    class Comparing(UsefulJudge):
        def compare(self, pairs):
            asked.append([(a.action, b.action) for a, b in pairs])
            return [0.25] * len(pairs)

    eps = [ep((f"<guess>{i}</guess>", "x", True)) for i in range(5)]
    r = OniReward(variant="ranking", lag=0)
    r.judge = Comparing()
    r(episodic_batch(make_batch, eps), None)
    (pairs,) = asked
    flat = [a for pair in pairs for a in pair]
    assert len(pairs) == 2 and len(set(flat)) == 4 and [p for _, p in r.model.data.items] == [0.25, 0.25]
    r2 = OniReward(variant="ranking", lag=0)
    r2.judge = lambda turns: [None if t.action == "<guess>0</guess>" else 1.0 for t in turns]
    _, m = r2(episodic_batch(make_batch, eps[:4]), None)
    assert len(r2.model.data.items) == 1 and m["oni/abstained"] == 1.0 and m["oni/annotated"] == 1.0
    r3 = OniReward(variant="ranking", lag=0)  # labels 1, 0, 1, 0 for guesses 0..3: each pair's P from its own two
    r3.judge = lambda turns: [float(t.action in ("<guess>0</guess>", "<guess>2</guess>")) for t in turns]
    r3(episodic_batch(make_batch, eps[:4]), None)
    useful = {"<guess>0</guess>\nx", "<guess>2</guess>\nx"}
    assert [p for _, p in r3.model.data.items] == [
        preference_from_labels(float(a in useful), float(b in useful)) for (a, b), _ in r3.model.data.items]


def test_a_judge_slower_than_wait_timeout_is_an_error_naming_the_step(make_batch):
    r = OniReward(lag=0, wait_timeout=0.1)
    r.judge = SlowJudge([0.6])
    with pytest.raises(RewardError, match=r"did not annotate the turns of step 0 within wait_timeout=0.1 s"):
        r(episodic_batch(make_batch, [ep(G5)]), None)
