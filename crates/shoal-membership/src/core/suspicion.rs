//! Suspicion bookkeeping: Lifeguard's suspicion timeout that shrinks as independent
//! confirmations arrive, the directed reminders a suspect gets (so it can refute), and
//! the declared failure sent straight to live members.

use std::{net::SocketAddr, time::Duration};

use bytes::BufMut;

use foca::{Codec, Header, Member, Message, PostcardCodec, State, Timer};
use shoal_types::MemberState;

use super::{ActiveSuspicion, CoreTimer, DOWN_FANOUT_MAX, MembershipCore};
use crate::{identity::GossipId, lifeguard::Suspicion, wire::Kind};

impl MembershipCore {
    pub(super) fn confirm_suspicion(
        &mut self,
        target: SocketAddr,
        inc: u16,
        by: SocketAddr,
        now: Duration,
    ) {
        let Some(active) = self.suspicions.get_mut(&target) else {
            return;
        };
        if active.incarnation != inc || !active.suspicion.confirm(by) {
            return;
        }
        let Some(timer) = self.timers.cancel(active.key) else {
            return;
        };
        let due = active.suspicion.started + self.awareness.scale(active.suspicion.timeout());
        active.key = self.timers.schedule(due.max(now), timer);
    }

    /// foca asks to declare a suspect down later. Lifeguard decides when: the timeout
    /// starts long and shrinks with confirmations. foca re-submits the timer each time
    /// it probes a member that is already suspect; that must not restart the clock, or
    /// a small cluster that keeps probing the same suspect would never declare it down.
    pub(super) fn start_suspicion(
        &mut self,
        now: Duration,
        addr: SocketAddr,
        incarnation: u16,
        target: GossipId,
        timer: Timer<GossipId>,
    ) {
        if let Some(active) = self.suspicions.get_mut(&addr)
            && active.incarnation == incarnation
        {
            // Same suspicion: keep its start and deadline, hold foca's latest timer.
            let due = self
                .timers
                .cancel(active.key)
                .map_or(now, |_| active.key.due);
            active.key = self.timers.schedule(due, CoreTimer::Foca(timer));
            return;
        }
        let n = self.foca.num_members() + 1;
        let min = Duration::from_millis(self.timing.suspicion_min_ms(n));
        let max = min * self.timing.suspicion_max_factor;
        let expected =
            (self.timing.suspicion_mult.saturating_sub(2)).min(n.saturating_sub(2) as u32);
        let suspicion = Suspicion::new(now, min, max, expected);
        let due = now + self.awareness.scale(suspicion.timeout());
        if let Some(old) = self.suspicions.remove(&addr) {
            self.timers.cancel(old.key);
        }
        let key = self.timers.schedule(due, CoreTimer::Foca(timer));
        self.stats.suspicions_raised += 1;
        self.suspicions.insert(
            addr,
            ActiveSuspicion {
                suspicion,
                incarnation,
                key,
            },
        );
        self.remind_suspect(target, incarnation, now);
    }

    /// Tells a member we suspect it, again every probe timeout while the suspicion
    /// lasts: a suspect that never hears of it cannot refute it in time.
    pub(super) fn remind_suspect(&mut self, target: GossipId, incarnation: u16, now: Duration) {
        let still = self
            .suspicions
            .get(&target.addr)
            .is_some_and(|s| s.incarnation == incarnation);
        if !still {
            return;
        }
        let suspect = Member::new(target.clone(), incarnation, State::Suspect);
        self.send_directed(target.clone(), suspect);
        let every = Duration::from_millis(self.timing.probe_timeout_ms);
        let next = CoreTimer::SuspicionNotice(target, incarnation);
        self.timers.schedule(now + every, next);
    }

    /// We just declared `member` down: tell every live member directly. Epidemic
    /// piggybacking alone leaves a straggler now and then (in simulation, 1 run in ~30 at
    /// 16 nodes learnt seconds late, once its updates' transmissions ran out); gossip
    /// still carries the update too.
    pub(super) fn announce_down(&mut self, member: GossipId, incarnation: u16) {
        let declared = self
            .views
            .get(&member.id)
            .is_some_and(|v| v.gossip.addr == member.addr && v.state == MemberState::Failed);
        if !declared {
            return;
        }
        let live: Vec<GossipId> = self
            .views
            .values()
            .filter(|v| v.state == MemberState::Alive && v.gossip.addr != member.addr)
            .map(|v| v.gossip.clone())
            .take(DOWN_FANOUT_MAX)
            .collect();
        for dst in live {
            self.send_directed(dst, Member::new(member.clone(), incarnation, State::Down));
        }
    }

    /// Sends one membership update straight to `dst` as a foca gossip packet. Used to
    /// shorten the suspicion round trip: the suspecter tells the suspect, the suspect
    /// answers the suspecter with its refutation. Ordinary gossip still carries both.
    pub(super) fn send_directed(&mut self, dst: GossipId, update: Member<GossipId>) {
        let header = Header {
            src: self.me.clone(),
            src_incarnation: self.incarnation,
            dst: dst.clone(),
            message: Message::Gossip,
        };
        let mut buf = Vec::with_capacity(256);
        let encoded = PostcardCodec.encode_header(&header, &mut buf).is_ok() && {
            buf.put_u16(1);
            PostcardCodec.encode_member(&update, &mut buf).is_ok()
        };
        if encoded {
            self.send_sealed(dst.addr, Kind::Swim, &buf);
        }
    }
}
