"""Suppression over groups (no database): nothing under k shown, nothing withheld derivable."""

from __future__ import annotations

import itertools

from mailer.reports.services import Cell, suppress

K = 10


def cells(*counts: int) -> list[Cell]:
    return [Cell((f"g{i}",), count) for i, count in enumerate(counts)]


def shown(table: list[Cell], withheld: set[int]) -> list[int]:
    return [cell.count for i, cell in enumerate(table) if i not in withheld]


def test_groups_just_over_and_at_k_are_shown_just_under_is_withheld():
    table = cells(K, K + 1, K - 1, K - 1)
    withheld, totals = suppress(table, K)
    assert shown(table, withheld) == [K, K + 1]
    assert withheld == {2, 3} and totals  # two withheld, 18 together: other = 18 tells neither


def test_one_withheld_group_takes_the_next_smallest_with_it():
    # Shown 50 and 12 with other = 3 would tell the one small group exactly.
    table = cells(50, 12, 3)
    withheld, totals = suppress(table, K)
    assert shown(table, withheld) == [50]
    assert withheld == {1, 2} and totals


def test_withheld_groups_summing_under_k_take_the_next_smallest():
    # 2 + 3 = 5 < k: other = 5 would say both groups are tiny.
    table = cells(40, 11, 2, 3)
    withheld, totals = suppress(table, K)
    assert shown(table, withheld) == [40]
    assert sum(table[i].count for i in withheld) == 16 and totals


def test_nothing_left_to_withhold_nulls_other_and_total():
    for counts in ((4,), (1, 2), (3, 3, 2)):
        withheld, totals = suppress(cells(*counts), K)
        assert withheld == set(range(len(counts))) and not totals


def test_a_lone_group_at_k_is_shown_with_its_total():
    withheld, totals = suppress(cells(K), K)
    assert withheld == set() and totals


def test_two_dimensions_protect_every_row_and_column():
    # Rows: country; columns: plan. The report by country alone publishes each row's sum, so
    # in the DE row the 4 must not be the only withheld cell.
    table = [Cell(("DE", "gold"), 45), Cell(("DE", "silver"), 4),
             Cell(("FR", "gold"), 30), Cell(("FR", "silver"), 20)]
    withheld, totals = suppress(table, K, dimensions=2)
    for axis in (0, 1):
        for value in {c.key[axis] for c in table}:
            hidden = [table[i].count for i in withheld if table[i].key[axis] == value]
            assert not hidden or (len(hidden) >= 2 and sum(hidden) >= K), (axis, value, hidden)
    assert 1 in withheld and 0 in withheld  # the DE row's only other cell
    assert totals


def test_no_withheld_count_follows_from_the_shown_groups_other_and_total():
    for size in range(1, 5):
        for counts in itertools.product([1, 4, 9, 10, 11, 30], repeat=size):
            table = cells(*counts)
            withheld, totals = suppress(table, K)
            assert all(table[i].count >= K for i in range(size) if i not in withheld), counts
            hidden = [table[i].count for i in withheld]
            if totals and hidden:
                # other = sum(hidden) is published: it must cover two or more groups, >= k.
                assert len(hidden) >= 2 and sum(hidden) >= K, counts
