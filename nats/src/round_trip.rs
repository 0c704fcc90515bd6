//! [`round_trip`]: wait until the server has handled what a client sent.

use std::time::Duration;

use futures_util::StreamExt;

use crate::BridgeError;

/// Waits until the server has handled everything `client` sent before the call, for at
/// most `timeout`.
///
/// async-nats's `Client::flush` writes the client's buffer to the socket and returns: a
/// subscription sent just before may not be in place at the server yet, and a message
/// published meanwhile on another connection is not delivered to it. This sends one
/// message to a fresh inbox subject that the client subscribes to first, and waits for it
/// to come back: the server handles one connection's operations in order, so by then it
/// has every subscription made earlier on `client`. [`Bridge::import`](crate::Bridge::import)
/// does this before it returns.
///
/// Errors: [`BridgeError::Nats`] when the probe cannot be sent, or does not come back
/// within `timeout` (a server that is down or unreachable: the client keeps what it sent
/// for its reconnection, and this gives up).
pub async fn round_trip(client: &async_nats::Client, timeout: Duration) -> Result<(), BridgeError> {
    let inbox = client.new_inbox();
    let mut probe = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| BridgeError::nats("round trip: subscribe", e))?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .map_err(|e| BridgeError::nats("round trip: publish", e))?;
    client
        .flush()
        .await
        .map_err(|e| BridgeError::nats("round trip: flush", e))?;
    // The probe's subscription is dropped on return: the client unsubscribes.
    match tokio::time::timeout(timeout, probe.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(BridgeError::nats(
            "round trip",
            "the subscription ended (the client closed)",
        )),
        Err(_) => Err(BridgeError::nats(
            "round trip",
            format!("the server did not answer within {timeout:?}"),
        )),
    }
}
