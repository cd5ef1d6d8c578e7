"""Contact, health and catching up, for the bridge core: partition detection and healing
(the table in :mod:`.contact`), following the announcements of f+1 validators (or of
enough strangers, for a node whose known set left), and when to announce our own state.
Sans-IO: functions over the :class:`~.actions.Core` they serve, explicit ``now``.
"""

from __future__ import annotations

from ..consensus.quorum import max_faulty, quorum
from ..wire.messages import StateAnnounce
from .actions import Core, HealthChanged
from .announce import Why
from .contact import Effect, Seen, next_health
from .session import Session


def check_contact(core: Core, s: Session, now: float) -> None:
    """Partition detection and healing; catching up while f+1 validators are ahead."""
    n = len(s.validators)
    in_contact = s.contact.in_contact(now)
    before = s.health
    following = None
    if lost_set(core, s, now, in_contact):
        following = follow_announcements(core, s, now) or follow_strangers(core, s, now)
    if in_contact < quorum(n):
        seen = Seen.QUORUM_LOST
    else:  # behind: hand the engine what f+1 validators announced
        behind = follow_announcements(core, s, now) if following is None else following
        seen = Seen.BEHIND if behind else Seen.IN_STEP
    s.health, effect = next_health(before, seen)
    if s.health is before:
        return
    core.counters[f"health_{s.health.value}"] += 1
    core.emit(HealthChanged(s.id, s.health, before, s.engine.height, in_contact, n))
    if effect is Effect.HEAL:
        # Healing: tell the others where we are now; their answers drive catch-up.
        s.announcer.healed()
        announce(core, s, now)


def lost_set(core: Core, s: Session, now: float, in_contact: int | None = None) -> bool:
    """Whether the set we know cannot lead us: we are not one of it (a joiner), or we
    hear no quorum of it. Only then do keys outside it matter."""
    if not s.engine.is_validator:
        return True
    if in_contact is None:
        in_contact = s.contact.in_contact(now)
    return in_contact < quorum(len(s.validators))


def note_stranger(core: Core, s: Session, key: bytes, msg: StateAnnounce) -> None:
    """Keep the last announcement of a key outside our validator set (bounded: the
    oldest heard goes first)."""
    core.counters["announce_stranger"] += 1
    s.strangers[key] = msg
    s.strangers.move_to_end(key)
    while len(s.strangers) > core.config.stranger_capacity:
        s.strangers.popitem(last=False)
        core.drop("announce_stranger_evicted")


def follow_strangers(core: Core, s: Session, now: float) -> bool:
    """Catch up on announcements of keys outside the set we know (True when behind).

    None of them is trusted: one stranger above us only makes the engine ask for our
    next block (checked against the set of its own height); only ``max(2, f+1)``
    distinct strangers above us make the engine take the (f+1)-th highest as the
    height to catch up to. Sybil keys buy a liar one request per ``request_interval``."""
    eng = s.engine
    ahead = sorted((a.height for a in s.strangers.values() if a.height > eng.height), reverse=True)
    if not ahead:
        return False
    need = max(2, max_faulty(len(s.validators)) + 1)
    target = ahead[need - 1] if len(ahead) >= need else eng.height + 1
    core.counters["stranger_catch_up"] += 1
    core.engine_receive(s, now, StateAnnounce(target, bytes(32), bytes(32)))
    core.after(s, now)
    return True


def follow_announcements(core: Core, s: Session, now: float) -> bool:
    """If f+1 validators (so at least one honest) announced heights above ours, hand the
    engine the (f+1)-th highest announcement so it catches up; True when behind."""
    f = max_faulty(len(s.validators))
    if len(s.announced) <= f:
        return False
    ahead = sorted(s.announced.values(), key=lambda a: a.height, reverse=True)[f]
    if ahead.height <= s.engine.height:
        return False
    core.engine_receive(s, now, ahead)  # the engine rate-limits its own requests
    core.after(s, now)
    return True


def maybe_announce(core: Core, s: Session, now: float) -> None:
    """Announce when the state changed (interval halves) or as a rare heartbeat."""
    ann = s.engine.state_announcement()
    gossiping = core.config.gossip and not s.flood_own
    why = s.announcer.tick(now, (ann.height, ann.state_hash), gossiping)
    if why is Why.HEARTBEAT:
        core.counters["heartbeats"] += 1  # keeps contact (partition detection) when idle
    if why is not None:
        announce(core, s, now)


def announce(core: Core, s: Session, now: float) -> None:
    ann = s.engine.state_announcement()
    s.announcer.announced(now, (ann.height, ann.state_hash))
    core.counters["announcements"] += 1
    core.transmit(now, s.id, ann)
