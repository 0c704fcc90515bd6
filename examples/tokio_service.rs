//! A tokio service around two buses: tasks ask a pricing actor for quotes by request-reply,
//! place orders at the quoted price, and a consumer task follows the fills.
//!
//! - `desk` (`Bus<Desk>`): topic `pricing` is the pricing actor, which answers each
//!   `Desk::Quote` through the `Reply` the message carries (and, for an item it does not
//!   price, does not answer: the requester gets `NoReply` at once); topic `orders` is the
//!   execution actor, which fills each order and publishes the fill to the other bus.
//! - `fills` (`Bus<Fill>`): the fills, which the consumer task reads as a subscriber stream
//!   (`subscribe_stream`, `recv_async`). Traders place orders with `publish_async`, which
//!   awaits room without blocking a worker thread.
//!
//! Shutting down: the desk bus first (its actors finish every accepted order, and the
//! execution actor's handle on the fills bus is dropped with it), then the fills bus (its
//! shutdown ends the consumer's stream after the last fill, and the task with it).
//!
//! Run with `cargo run --example tokio_service`.

use std::sync::Arc;
use std::time::Duration;

use shardbus::{Bus, Context, Reply, RequestError};

/// A price quote, in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quote {
    item: &'static str,
    cents: u64,
}

/// What the desk's actors take.
enum Desk {
    /// Asks the pricing actor for a price; the answer comes back through `reply`.
    Quote {
        item: &'static str,
        reply: Reply<Quote>,
    },
    /// An order at a quoted price, for the execution actor.
    Order { id: u64, quote: Quote, qty: u64 },
}

/// An executed order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fill {
    order: u64,
    item: &'static str,
    qty: u64,
    total_cents: u64,
}

/// What the pricing actor knows.
fn price(item: &str) -> Option<u64> {
    match item {
        "apple" => Some(30),
        "pear" => Some(45),
        "plum" => Some(12),
        _ => None,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fills = Arc::new(Bus::<Fill>::builder().shards(1).build()?);
    let desk = Arc::new(Bus::<Desk>::builder().shards(2).build()?);

    desk.subscribe("pricing", |_: &mut Context<'_, Desk>, msg: &Desk| {
        if let Desk::Quote { item, reply } = msg {
            if let Some(cents) = price(item) {
                // Err(quote) only if the requester stopped waiting.
                let _ = reply.send(Quote { item, cents });
            }
            // An unknown item: no answer. The `Reply` is dropped with the message, and
            // the requester learns it at once (NoReply), not at its timeout.
        }
    })?;
    {
        let fills = fills.clone();
        desk.subscribe("orders", move |_: &mut Context<'_, Desk>, msg: &Desk| {
            if let Desk::Order { id, quote, qty } = msg {
                let fill = Fill {
                    order: *id,
                    item: quote.item,
                    qty: *qty,
                    total_cents: quote.cents * qty,
                };
                // Another bus: a blocking publish from this handler is allowed.
                fills
                    .publish("fills", fill)
                    .expect("the fills bus outlives the desk");
            }
        })?;
    }

    // The consumer's feed of fills: a subscriber stream (the shard never waits for it).
    let mut fill_rx = fills.subscribe_stream("fills", 64)?;
    let consumer = tokio::spawn(async move {
        let mut total = 0;
        let mut count = 0;
        while let Some(fill) = fill_rx.recv_async().await {
            println!(
                "fill: order {} of {} x {} for {} cents",
                fill.order, fill.qty, fill.item, fill.total_cents
            );
            total += fill.total_cents;
            count += 1;
        }
        (count, total)
    });

    // Traders: quote, then order at the quoted price.
    let wants = ["apple", "pear", "plum", "durian", "apple", "plum"];
    let traders: Vec<_> = wants
        .iter()
        .enumerate()
        .map(|(i, &item)| {
            let desk = desk.clone();
            tokio::spawn(async move {
                let asked = desk
                    .request_async(
                        "pricing",
                        |reply| Desk::Quote { item, reply },
                        Duration::from_secs(5),
                    )
                    .await;
                let quote = match asked {
                    Ok(quote) => quote,
                    Err(RequestError::NoReply) => {
                        println!("trader {i}: no price for {item}");
                        return false;
                    }
                    Err(e) => {
                        println!("trader {i}: quote for {item} failed: {e}");
                        return false;
                    }
                };
                println!("trader {i}: {item} quoted at {} cents", quote.cents);
                let order = Desk::Order {
                    id: i as u64,
                    quote,
                    qty: i as u64 + 1,
                };
                // Awaits room in the desk's inbox without blocking a worker thread.
                desk.publish_async("orders", order)
                    .await
                    .expect("the desk is open");
                true
            })
        })
        .collect();
    let mut placed = 0;
    for trader in traders {
        placed += usize::from(trader.await?);
    }
    println!("{placed} orders placed");

    // Shut down: the desk first (every accepted order is filled), then the fills bus,
    // whose shutdown ends the consumer's stream. Blocking calls go to a blocking thread.
    let desk = Arc::try_unwrap(desk).map_err(|_| "a trader still holds the desk")?;
    let desk_stats = tokio::task::spawn_blocking(move || desk.shutdown()).await?;
    let fills = Arc::try_unwrap(fills).map_err(|_| "the desk still holds the fills bus")?;
    let fill_stats = tokio::task::spawn_blocking(move || fills.shutdown()).await?;
    let (count, total) = consumer.await?;
    println!(
        "{count} fills for {total} cents; the desk handled {} messages, the fills bus {}",
        desk_stats.handled(),
        fill_stats.handled()
    );
    assert_eq!(count, placed);
    Ok(())
}
