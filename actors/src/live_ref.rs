//! A slot holding the current ref of an actor that the supervisor may replace.
//!
//! The pipeline actors are respawned when they exit; whoever sends to one (a sensor, the
//! generator, the admin API) holds a [`LiveRef`] instead of an `ActorRef`, so after a
//! respawn the next message reaches the new actor instead of a dead one.

use ractor::{ActorRef, Message};
use std::sync::{Arc, RwLock};

use crate::sync::{read, write};

pub struct LiveRef<M: Message>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M: Message> Clone for LiveRef<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M: Message> Default for LiveRef<M> {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }
}

impl<M: Message> LiveRef<M> {
    /// The actor as it is now; `None` while it is down (between an exit and its respawn,
    /// or after shutdown).
    pub fn get(&self) -> Option<ActorRef<M>> {
        read(&self.0).clone()
    }

    pub(crate) fn set(&self, actor: Option<ActorRef<M>>) {
        *write(&self.0) = actor;
    }

    /// Sends to the current actor; false when it is down or its mailbox is closed.
    pub fn send(&self, message: M) -> bool {
        self.get()
            .is_some_and(|actor| actor.send_message(message).is_ok())
    }
}
