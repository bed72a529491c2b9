"""Second look at whole turns: a turn that sounds like another speaker is given to that speaker.

pyannote clusters (10-s window, local speaker) embeddings. When the segmentation model keeps one local
speaker across a change of voice inside a window (a pause of a few hundred ms between two people recorded in
different conditions), every window holding both gives the second voice the first one's label, and the
clustering never sees it alone. Here each *island* (a stretch of one label in the exclusive diarization, with
pieces of other labels shorter than ``sliver_s`` inside it ignored) of ``min_island_s`` or more is embedded
whole, and moved to another speaker when its embedding is clearly nearer that speaker's turns than the rest of
its own speaker's turns. Speakers are never removed: a speaker's last island stays.

Before that, an island that holds two voices (the segmentation model kept one local speaker across a change of
voice in every window) is *split*: where the embeddings of the seconds before and after a moment differ most,
and the two whole sides differ by ``split_distance`` or more, the shorter side gets a fresh label. A fresh
label then joins the nearest speaker within the clustering threshold (its own included: a split that was not
needed is undone), or stays a new speaker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..audio import SAMPLE_RATE
from ..result import Turn

if TYPE_CHECKING:
    from .pipeline import DiarizationParams


@dataclass(frozen=True)
class RefineRules:
    """When an island is split, embedded and moved (the first seven and ``regroup_min_turns`` from
    :class:`DiarizationParams`)."""

    min_island_s: float
    """Islands shorter than this are too short for a reliable embedding: never moved."""
    max_embed_s: float
    """At most this much of an island (its middle) is embedded: bounds the cost on long turns."""
    margin: float
    """Cosine distance by which the other speaker must be nearer than the island's own speaker."""
    max_distance: float
    """…and the other speaker at most this far (the clustering threshold)."""
    split_distance: float
    """Split an island where its two sides' embeddings are at least this far apart (cosine). Above 1: off."""
    split_min_s: float
    """Islands (and sides of a split) shorter than this are not split."""
    lone_distance: float
    """A single turn (of ``regroup_min_s`` or more) is parted too when it is at least this far (cosine) from
    *every* other turn of its speaker. 2 or more (the largest cosine distance): never."""
    sliver_s: float = 0.25
    """Pieces of another label shorter than this inside an island belong to the island."""
    join_gap_s: float = 0.2
    """Two pieces of one label less than this apart are one island (a longer pause may be a change of voice)."""
    rounds: int = 2
    """Centroids are recomputed after each round of moves."""
    split_window_s: float = 1.5
    """Seconds embedded on each side of a candidate moment."""
    split_hop_s: float = 0.5
    """Candidate moments this far apart."""
    split_side_s: float = 8.0
    """At most this much of each side, next to the moment, is embedded to decide a split."""
    split_depth: int = 2
    """A side of a split is split again at most this many times over."""
    regroup_min_turns: int = 0
    """A speaker is parted when its turns fall into two groups of at least this many turns (0: never)."""
    regroup_min_s: float = 2.0
    """…each group holding at least this much speech."""
    flicker_margin: float = 2.0
    """A *flicker* stretch (:func:`flickers`) goes whole to the nearest speaker when every other speaker is
    at least this much farther (cosine). 2 or more: off."""

    @classmethod
    def of(cls, params: DiarizationParams) -> RefineRules:
        return cls(min_island_s=params.refine_min_island_s, max_embed_s=params.refine_max_embed_s,
                   margin=params.refine_margin, max_distance=params.clustering_threshold,
                   split_distance=params.split_distance, split_min_s=params.split_min_s,
                   regroup_min_turns=params.regroup_min_turns, lone_distance=params.regroup_lone_distance,
                   flicker_margin=params.flicker_margin)


@dataclass(frozen=True)
class Island:
    start: float
    end: float
    speaker: str

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Move:
    """One island given to another speaker."""

    start: float
    end: float
    old: str
    new: str
    own_distance: float
    new_distance: float
    kind: str = "move"
    """``move`` (:func:`plan_moves`), ``split`` (:func:`find_splits`: ``own_distance`` is the two sides'
    distance), ``join`` (:func:`join_fresh`), ``regroup`` (:func:`regroup`: ``own_distance`` is the
    group's mean cosine distance to its speaker's other turns) or ``flicker`` (:func:`give_flickers`:
    ``own_distance`` is the stretch's distance to its old label)."""

    @property
    def undoes_split(self) -> bool:
        """A fresh label given back to the speaker it was split from."""
        return self.kind == "join" and self.old.startswith(self.new + "+")


def islands(exclusive: list[Turn], rules: RefineRules) -> list[Island]:
    """Stretches of one label in exclusive turns (non-overlapping, any order), slivers of others absorbed."""
    kept = sorted((t for t in exclusive if t.end - t.start >= rules.sliver_s), key=lambda t: t.start)
    out: list[Island] = []
    for t in kept:
        if out and out[-1].speaker == t.speaker and t.start - out[-1].end < rules.join_gap_s:
            out[-1] = Island(out[-1].start, max(out[-1].end, t.end), t.speaker)
        else:
            out.append(Island(t.start, t.end, t.speaker))
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-9)


Embed = Callable[[list[np.ndarray]], np.ndarray]
"""Pieces of audio → one embedding per piece (N, D), in one call so that it can batch them."""
Spans = Callable[[list[tuple[float, float]]], np.ndarray]
"""(start, end) spans in seconds → one embedding per span (N, D), in one call so that it can batch them."""


def find_splits(found: list[Island], embed_spans: Spans, rules: RefineRules) -> list[Move]:
    """Islands that hold two voices, each cut once per change: the shorter side of every cut as a
    :class:`Move` to a fresh label ``<speaker>+<n>`` (``own_distance``: the two sides' cosine distance).

    The cut goes where the ``split_window_s`` before and after a moment (every ``split_hop_s``) differ most;
    it is made when the two sides (at most ``split_side_s`` of each, next to the moment) are at least
    ``split_distance`` apart; each side is then tested again, ``split_depth`` times at most. Each window is
    embedded once (a window is the right one of a moment and the left one of a later moment)."""
    if rules.split_distance > 1.0:
        return []
    out: list[Move] = []
    w = rules.split_window_s
    cache: dict[float, np.ndarray] = {}

    def windows(starts: list[float]) -> np.ndarray:
        todo = sorted({round(x, 3) for x in starts} - cache.keys())
        if todo:
            for x, v in zip(todo, _rows(np.asarray(embed_spans([(x, x + w) for x in todo]), dtype=np.float64))):
                cache[x] = v
        return np.stack([cache[round(x, 3)] for x in starts])

    def cut(a: float, b: float, speaker: str, depth: int) -> None:
        if b - a < max(rules.split_min_s, 2 * w) or depth < 0:
            return
        moments = [float(t) for t in np.arange(a + w, b - w + 1e-6, rules.split_hop_s)]
        near = np.einsum("nd,nd->n", windows([t - w for t in moments]), windows(moments))
        if not np.isfinite(near).any():  # no window long enough to embed (past the audio's end)
            return
        t = moments[int(np.nanargmin(near))]
        sides = [(max(a, t - rules.split_side_s), t), (t, min(b, t + rules.split_side_s))]
        before, after = np.asarray(embed_spans(sides), dtype=np.float64)
        distance = 1.0 - float(_unit(before) @ _unit(after))
        if not np.isfinite(distance) or distance < rules.split_distance:
            return
        fresh = f"{speaker}+{len(out) + 1}"
        start, end = (a, t) if t - a < b - t else (t, b)
        out.append(Move(round(start, 3), round(end, 3), speaker, fresh, round(distance, 3), 1.0, "split"))
        cut(a, t, speaker, depth - 1)
        cut(t, b, speaker, depth - 1)

    for island in found:
        cut(island.start, island.end, island.speaker, rules.split_depth)
        cache.clear()
    return out


def _rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def join_fresh(found: list[Island], embeddings: dict[int, np.ndarray], fresh: set[str], rules: RefineRules,
               max_speakers: int | None = None) -> list[Move]:
    """Fresh labels (from :func:`find_splits`) that join the nearest speaker within ``max_distance``, one at a
    time, shortest island first (centroids updated after each). A speaker the clustering found is preferred
    to another fresh label: two pieces of one voice split from turns are nearer each other than to that voice's
    centroid over the whole file, and would make a new speaker of it. A fresh label stays a new speaker only
    while the speakers number fewer than ``max_speakers`` (a caller's hint); past it, it joins the nearest
    one whatever the distance. Pure: no audio."""
    labels = {i: found[i].speaker for i in embeddings}
    room = len(found) if max_speakers is None else max_speakers - len({x.speaker for x in found} - fresh)
    moves: list[Move] = []
    for i in sorted((i for i in embeddings if labels[i] in fresh), key=lambda i: found[i].duration):
        own, e = labels[i], embeddings[i]
        if sum(1 for j in labels if labels[j] == own) > 1:
            continue
        sums = _speaker_sums(found, {j: v for j, v in embeddings.items() if j != i}, labels, rules)
        if not sums:
            continue
        others = {s: 1.0 - float(e @ _unit(v)) for s, v in sums.items()}
        known = [s for s in others if s not in fresh and others[s] <= rules.max_distance]
        best = min(known or others, key=lambda s: others[s])  # a speaker the clustering found comes first
        if others[best] > rules.max_distance and room > 0:
            room -= 1  # a new speaker
            continue
        labels[i] = best
        moves.append(Move(found[i].start, found[i].end, own, best, 1.0, round(others[best], 3), "join"))
    return moves


def _speaker_sums(found: list[Island], embeddings: dict[int, np.ndarray], labels: dict[int, str],
                  rules: RefineRules) -> dict[str, np.ndarray]:
    """Each speaker's islands' embeddings summed, weighted by the seconds embedded (a centroid's direction)."""
    sums: dict[str, np.ndarray] = {}
    for i, e in embeddings.items():
        sums[labels[i]] = sums.get(labels[i], 0) + min(found[i].duration, rules.max_embed_s) * e
    return sums


def plan_moves(found: list[Island], embeddings: dict[int, np.ndarray], rules: RefineRules) -> list[Move]:
    """The moves, given unit embeddings of some islands (index in ``found`` → vector). Pure: no audio."""
    labels = {i: found[i].speaker for i in embeddings}
    weight = {i: min(found[i].duration, rules.max_embed_s) for i in embeddings}
    moves: dict[int, Move] = {}
    for _ in range(rules.rounds):
        sums = _speaker_sums(found, embeddings, labels, rules)
        counts: dict[str, int] = {}
        for i in embeddings:
            counts[labels[i]] = counts.get(labels[i], 0) + 1
        moved = False
        for i, e in embeddings.items():
            own = labels[i]
            if counts[own] < 2:  # its speaker's last island: the clustering decided, not this pass
                continue
            own_d = 1.0 - float(e @ _unit(sums[own] - weight[i] * e))
            others = {s: 1.0 - float(e @ _unit(v)) for s, v in sums.items() if s != own}
            if not others:
                continue
            best = min(others, key=lambda s: others[s])
            if others[best] <= rules.max_distance and others[best] + rules.margin <= own_d:
                original = found[i].speaker
                labels[i] = best
                counts[own] -= 1
                counts[best] += 1
                moves[i] = Move(found[i].start, found[i].end, original, best, round(own_d, 3), round(others[best], 3))
                moved = True
        if not moved:
            break
    return [m for i, m in sorted(moves.items()) if m.old != labels[i] and m.new == labels[i]]


def regroup(found: list[Island], embeddings: dict[int, np.ndarray], moves: list[Move], rules: RefineRules,
            room: int | None = None) -> list[Move]:
    """Speakers whose whole turns fall apart into two voices, parted: each speaker's embedded islands (its
    labels after ``moves``) are clustered again, average linkage on cosine distance cut at ``max_distance``
    (the clustering's own threshold); when two groups or more hold ``regroup_min_turns`` islands and
    ``regroup_min_s`` of speech each (a group may also be one turn ``lone_distance`` from each of the
    speaker's others), every such group but the longest becomes a new speaker ``<speaker>~<n>``. At most
    ``room`` new speakers (a caller's hint), longest groups first. Pure: no audio.

    pyannote clusters 10-s windows, and a window holding two voices one after the other often gives both one
    local speaker: a voice heard only in short turns next to others then has no window of its own and joins
    a neighbour's cluster (docs/benchmarks.md, "A speaker whose turns are two voices")."""
    if rules.regroup_min_turns < 1:
        return []
    from scipy.cluster.hierarchy import fcluster, linkage

    labels = final_labels(found, embeddings, moves)

    def seconds(group: list[int]) -> float:
        return sum(found[i].duration for i in group)

    candidates: list[tuple[float, float, str, list[int]]] = []
    for speaker in sorted(set(labels.values())):
        members = [i for i in sorted(labels) if labels[i] == speaker]
        if len(members) < 2:
            continue
        tree = linkage(np.stack([embeddings[i] for i in members]), method="average", metric="cosine")
        groups: dict[int, list[int]] = {}
        for i, k in zip(members, fcluster(tree, rules.max_distance, criterion="distance")):
            groups.setdefault(int(k), []).append(i)
        kept = sorted((g for g in groups.values() if seconds(g) >= rules.regroup_min_s and (
            len(g) >= rules.regroup_min_turns or _lone(g, members, embeddings, rules))), key=seconds, reverse=True)
        for g in kept[1:]:  # every group but the longest
            inside = np.stack([embeddings[i] for i in g])
            rest = np.stack([embeddings[i] for i in members if i not in g])
            candidates.append((seconds(g), float(np.mean(1.0 - inside @ rest.T)), speaker, g))
    candidates.sort(key=lambda c: -c[0])
    if room is not None:
        candidates = candidates[:max(0, room)]
    out: list[Move] = []
    for n, (_, apart, speaker, group) in enumerate(candidates, 1):
        out += [Move(found[i].start, found[i].end, speaker, f"{speaker}~{n}", round(apart, 3), 0.0, "regroup")
                for i in group]
    return sorted(out, key=lambda m: m.start)


def _lone(group: list[int], members: list[int], embeddings: dict[int, np.ndarray], rules: RefineRules) -> bool:
    """Whether ``group`` is one turn at least ``lone_distance`` from every other turn of its speaker: a voice
    heard in a single turn between others (held_out_a's Diane, 0.75–0.89 from each of the four jfk turns it
    was clustered with; docs/benchmarks.md, "A voice heard in one turn")."""
    return len(group) == 1 and min(1.0 - float(embeddings[group[0]] @ embeddings[j])
                                   for j in members if j != group[0]) >= rules.lone_distance


def embed_islands(found: list[Island], audio: np.ndarray, embed: Embed, rules: RefineRules) -> dict[int, np.ndarray]:
    """Unit embeddings of the islands long enough (the middle ``max_embed_s`` of each).

    ``embed`` takes the pieces of audio and returns one embedding per piece (N, D), in one call so that it
    can batch them.
    """
    chosen: list[int] = []
    pieces: list[np.ndarray] = []
    for i, island in enumerate(found):
        if island.duration < rules.min_island_s:
            continue
        middle = (island.start + island.end) / 2
        half = min(island.duration, rules.max_embed_s) / 2
        a, b = int((middle - half) * SAMPLE_RATE), int((middle + half) * SAMPLE_RATE)
        chosen.append(i)
        pieces.append(audio[max(0, a): b])
    if not pieces:
        return {}
    vectors = np.asarray(embed(pieces), dtype=np.float64).reshape(len(pieces), -1)
    return {i: _unit(v) for i, v in zip(chosen, vectors) if np.all(np.isfinite(v))}


def apply_moves(turns: list[Turn], moves: list[Move], rules: RefineRules) -> list[Turn]:
    """Turns with each move's span of its old speaker given to the new one; touching turns of one speaker joined."""
    pieces: list[Turn] = []
    for t in turns:
        todo = [t]
        for m in moves:
            nxt: list[Turn] = []
            for p in todo:
                if p.speaker != m.old or p.end <= m.start or p.start >= m.end:
                    nxt.append(p)
                    continue
                if p.start < m.start:
                    nxt.append(Turn(p.start, m.start, p.speaker))
                nxt.append(Turn(max(p.start, m.start), min(p.end, m.end), m.new))
                if p.end > m.end:
                    nxt.append(Turn(m.end, p.end, p.speaker))
            todo = nxt
        pieces.extend(todo)
    for m in moves:  # slivers of other labels inside a moved island belong to it
        pieces = [Turn(p.start, p.end, m.new) if m.start <= p.start and p.end <= m.end and p.speaker != m.new
                  and p.end - p.start < rules.sliver_s else p for p in pieces]
    joined: list[Turn] = []
    for p in sorted(pieces, key=lambda p: (p.speaker, p.start)):
        if joined and joined[-1].speaker == p.speaker and p.start <= joined[-1].end + 1e-3:
            joined[-1] = Turn(joined[-1].start, max(joined[-1].end, p.end), p.speaker)
        else:
            joined.append(p)
    return sorted(joined, key=lambda p: (p.start, p.speaker))


def final_labels(found: list[Island], embeddings: dict[int, np.ndarray], moves: list[Move]) -> dict[int, str]:
    """Each embedded island's speaker once ``moves`` (matched by span) are made."""
    by_span = {(m.start, m.end): m.new for m in moves}
    return {i: by_span.get((found[i].start, found[i].end), found[i].speaker) for i in embeddings}


@dataclass(frozen=True)
class Flicker(Island):
    """A stretch of short pieces of several labels (:func:`flickers`); ``speaker`` names them for the log."""

    labels: tuple[str, ...] = ()


def flickers(exclusive: list[Turn], rules: RefineRules) -> list[Flicker]:
    """Stretches of speech between two pauses (``join_gap_s`` or longer) made only of pieces shorter than
    ``min_island_s`` of two labels or more, and ``min_island_s`` long or more: one turn the segmentation
    could not decide, too broken for any of its pieces to be an island (held_out_a's Diane: seven pieces of
    0.02–0.44 s alternating between two other speakers' labels). None when the rule is off."""
    out: list[Flicker] = []
    if rules.flicker_margin >= 2.0:
        return out
    run: list[Turn] = []
    end = 0.0

    def close() -> None:
        labels = sorted({t.speaker for t in run})
        if len(labels) >= 2 and all(t.end - t.start < rules.min_island_s for t in run) \
                and end - run[0].start >= rules.min_island_s:
            out.append(Flicker(run[0].start, end, " | ".join(labels), tuple(labels)))

    for t in sorted(exclusive, key=lambda t: t.start):
        if run and t.start - end >= rules.join_gap_s:
            close()
            run = []
        run.append(t)
        end = max(end, t.end) if len(run) > 1 else t.end
    if run:
        close()
    return out


def give_flickers(stretches: list[Flicker], vectors: dict[int, np.ndarray], found: list[Island],
                  embeddings: dict[int, np.ndarray], labels: dict[int, str], rules: RefineRules) -> list[Move]:
    """Each flicker stretch (``vectors``: its unit embedding, by index in ``stretches``) given whole to the
    speaker whose islands' centroid (``labels``: their speakers now) is nearest when every other speaker is
    at least ``flicker_margin`` farther: one :class:`Move` per label of the stretch that changes. No bound on
    the distance itself: 1–2 s of broken speech embeds far from every centroid (Diane's stretch: 0.55 from
    hers, 0.85–1.13 from the others). Pure: no audio."""
    if rules.flicker_margin >= 2.0:
        return []
    sums = _speaker_sums(found, embeddings, labels, rules)
    out: list[Move] = []
    for k, v in vectors.items():
        stretch = stretches[k]
        near = {s: 1.0 - float(v @ _unit(c)) for s, c in sums.items()}
        if len(near) < 2:
            continue
        best, second = sorted(near, key=lambda s: near[s])[:2]
        if near[best] + rules.flicker_margin > near[second]:
            continue
        out += [Move(stretch.start, stretch.end, s, best, round(near.get(s, 2.0), 3), round(near[best], 3),
                     "flicker") for s in stretch.labels if s != best]
    return out
