import numpy as np
import pytest
import torch

from common.knn import weighted_knn_hits


def brute_force_knn(bank, bank_labels, queries, query_labels, k, temperature):
    """(top-1 %, top-5 %) of the weighted vote, one query at a time in float64."""
    top1 = top5 = 0
    for query, label in zip(queries, query_labels):
        similarity = bank @ query
        nearest = np.argsort(-similarity)[:k]
        votes = {}
        for i in nearest:
            votes[bank_labels[i]] = votes.get(bank_labels[i], 0.0) + np.exp(similarity[i] / temperature)
        ranked = sorted(votes, key=votes.get, reverse=True)
        top1 += ranked[0] == label
        top5 += label in ranked[:5]
    return 100 * top1 / len(queries), 100 * top5 / len(queries)


def normalised(rng, rows, dim):
    x = rng.normal(size=(rows, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_weighted_vote_matches_a_brute_force_reference_in_every_chunking():
    rng = np.random.default_rng(0)
    classes, dim = 7, 16
    centres = normalised(rng, classes, dim)
    bank_labels, query_labels = rng.integers(0, classes, 300), rng.integers(0, classes, 61)
    # Clustered so that the vote is neither trivial nor chance.
    bank = centres[bank_labels] + 2.5 * normalised(rng, 300, dim)
    queries = centres[query_labels] + 2.5 * normalised(rng, 61, dim)
    bank, queries = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (bank, queries))
    as_tensor = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    for chunk in (None, 1, 7, 61):
        hits = weighted_knn_hits(
            as_tensor(bank),
            torch.tensor(bank_labels),
            as_tensor(queries),
            torch.tensor(query_labels),
            classes,
            ks=(1, 10, 20, 200, 301),
            temperature=0.07,
            chunk=chunk,
        )
        assert sorted(hits) == [1, 10, 20, 200]  # k = 301 is more neighbours than the bank holds
        for k, (top1, top5) in hits.items():
            assert (100 * top1 / 61, 100 * top5 / 61) == pytest.approx(
                brute_force_knn(bank, bank_labels, queries, query_labels, k, 0.07)
            )
    assert 30 < 100 * hits[20][0] / 61 < 100
