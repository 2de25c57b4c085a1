"""SmallCache: small values only, a bounded number of them, emptied when full."""

from __future__ import annotations

from schedd.smallcache import SmallCache


def test_keeps_small_values_up_to_its_size_and_hands_large_ones_back_unkept() -> None:
    cache = SmallCache[str, str](entries=4, max_size=3)
    assert cache.put("a", "abc", 3) == "abc"
    assert cache.put("b", "abcd", 4) == "abcd"
    assert (cache.get("a"), cache.get("b"), len(cache)) == ("abc", None, 1)


def test_is_emptied_when_full_and_keeps_the_newcomer() -> None:
    cache = SmallCache[int, int](entries=3)
    for i in range(3):
        cache.put(i, i, 0)
    assert len(cache) == 3
    cache.put(3, 3, 0)
    assert ([cache.get(i) for i in range(4)], len(cache)) == ([None, None, None, 3], 1)
    cache.clear()
    assert cache.get(3) is None
