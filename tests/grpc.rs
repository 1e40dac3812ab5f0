//! End to end: the real `satflow serve` on a loopback port, called with the
//! generated client, over real mainnet blocks (heights 0–4521).

mod common;

use std::time::Duration;

use bitcoin::consensus::deserialize;
use common::server::{get_tx, Server};
use common::*;
use satflow_proto::v1 as pb;
use satflow_query::client::{self, ConnectOptions};
use tonic::Code;

const FIRST_PAYMENT: &str = "f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16";
const H9_COINBASE: &str = "0437cd7f8525ceed2324359c2d0ba26006d92d856a9c20fa0241106ee5a597c9";
const SATOSHI_H9: &str = "12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S";
const HAL: &str = "1Q2TWHE3GMdB6BZKafqwxXtWAWgFt5Jvm3";
const GENESIS_ADDR: &str = "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa";
/// The genesis coinbase's P2PK scriptPubKey.
const GENESIS_P2PK: &str = "4104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac";

struct Fixture {
    _blocks: tempfile::TempDir,
    _db: tempfile::TempDir,
    server: Server,
}

fn serve_blk00000(extra: &[&str]) -> Fixture {
    let blocks = blocks_dir(&["mainnet/blk00000_first1MiB.dat"]);
    let db = tempfile::tempdir().unwrap();
    index(blocks.path(), db.path());
    let server = Server::start(db.path(), extra);
    Fixture {
        _blocks: blocks,
        _db: db,
        server,
    }
}

fn history_request(
    address: &str,
    order: pb::Order,
    page_size: u32,
) -> pb::ListAddressHistoryRequest {
    pb::ListAddressHistoryRequest {
        address: address.into(),
        page_size,
        order: order.into(),
        ..Default::default()
    }
}

/// Every page of a history listing, following the tokens.
async fn all_history(
    c: &mut satflow_query::client::AddressesClient,
    mut request: pb::ListAddressHistoryRequest,
) -> (Vec<pb::HistoryEntry>, usize) {
    let (mut entries, mut pages) = (Vec::new(), 0);
    loop {
        let page = c
            .list_address_history(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= request.page_size as usize);
        entries.extend(page.entries);
        pages += 1;
        if page.next_page_token.is_empty() {
            return (entries, pages);
        }
        request.page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn block_170_payment() {
    let f = serve_blk00000(&[]);
    let mut c = f.server.connect().await;
    let tx = get_tx(&mut c, FIRST_PAYMENT).await;
    assert_eq!(
        (
            tx.height,
            tx.position,
            tx.fee,
            tx.coinbase,
            tx.size,
            tx.weight,
            tx.vsize
        ),
        (170, 1, Some(0), false, 275, 1100, 275)
    );
    let block = c
        .chain
        .get_block(pb::GetBlockRequest {
            id: Some(pb::get_block_request::Id::Height(170)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (tx.block_hash.as_str(), tx.time),
        (block.hash.as_str(), block.time)
    );
    assert_eq!(
        block.txids,
        vec![block.txids[0].clone(), FIRST_PAYMENT.to_string()]
    );
    assert_eq!(tx.inputs.len(), 1);
    let input = &tx.inputs[0];
    assert_eq!(
        (
            input.prev_txid.as_str(),
            input.prev_vout,
            input.value,
            input.address.as_str(),
            input.script_type.as_str()
        ),
        (H9_COINBASE, 0, Some(5_000_000_000), SATOSHI_H9, "p2pk")
    );
    let outs: Vec<_> = tx
        .outputs
        .iter()
        .map(|o| (o.vout, o.value, o.address.as_str(), o.script_type.as_str()))
        .collect();
    assert_eq!(
        outs,
        [
            (0, 1_000_000_000, HAL, "p2pk"),
            (1, 4_000_000_000, SATOSHI_H9, "p2pk")
        ]
    );
    // One input and output a page: the rest on the next one, with the
    // same header fields.
    let first = c
        .chain
        .get_transaction(pb::GetTransactionRequest {
            txid: FIRST_PAYMENT.into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            first.input_count,
            first.output_count,
            first.inputs.len(),
            first.outputs.len()
        ),
        (1, 2, 1, 1)
    );
    assert_eq!(first.outputs[0], tx.outputs[0]);
    let second = c
        .chain
        .get_transaction(pb::GetTransactionRequest {
            txid: FIRST_PAYMENT.into(),
            page_size: 1,
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((second.first_input, second.first_output), (1, 1));
    assert!(second.inputs.is_empty());
    assert_eq!(second.outputs, tx.outputs[1..]);
    assert_eq!((second.height, second.fee), (tx.height, tx.fee));
    assert!(second.next_page_token.is_empty());
    assert!(tx.next_page_token.is_empty());
    // Another transaction's token is refused.
    let e = c
        .chain
        .get_transaction(pb::GetTransactionRequest {
            txid: H9_COINBASE.into(),
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // The coinbase it spends names it as the spender.
    let h9 = get_tx(&mut c, H9_COINBASE).await;
    let spend = h9.outputs[0].spent_by.as_ref().expect("spent in block 170");
    assert_eq!(
        (spend.txid.as_str(), spend.vin, spend.height),
        (FIRST_PAYMENT, 0, 170)
    );
}

#[tokio::test]
async fn raw_transactions_hash_to_their_txid() {
    let f = serve_blk00000(&[]);
    let mut c = f.server.connect().await;
    for txid in [FIRST_PAYMENT, H9_COINBASE] {
        let raw = c
            .chain
            .get_raw_transaction(pb::GetTransactionRequest {
                txid: txid.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let tx: bitcoin::Transaction = deserialize(&raw.raw).unwrap();
        assert_eq!(tx.compute_txid().to_string(), txid);
    }
    // Without the blk files, the server says what is missing.
    drop(f._blocks);
    let e = c
        .chain
        .get_raw_transaction(pb::GetTransactionRequest {
            txid: FIRST_PAYMENT.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("blk00000.dat"), "{}", e.message());
}

#[tokio::test]
async fn satoshis_h9_address_summary_history_and_utxos() {
    let f = serve_blk00000(&[]);
    let mut c = f.server.connect().await;
    let s = c
        .addresses
        .get_address_summary(pb::GetAddressSummaryRequest {
            address: SATOSHI_H9.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let (oldest, one_page) = all_history(
        &mut c.addresses,
        history_request(SATOSHI_H9, pb::Order::OldestFirst, 10_000),
    )
    .await;
    assert_eq!(one_page, 1);
    // History is every tx touching the address: its sums are the summary.
    assert_eq!(s.tx_count, oldest.len() as u64);
    assert_eq!(s.received, oldest.iter().map(|e| e.received).sum::<u64>());
    assert_eq!(s.sent, oldest.iter().map(|e| e.sent).sum::<u64>());
    assert_eq!(s.balance as i64, oldest.iter().map(|e| e.net).sum::<i64>());
    assert_eq!((s.first_seen_height, s.script_type.as_str()), (9, "p2pkh"));
    assert_eq!(s.last_seen_height, oldest.last().unwrap().height);
    assert_eq!(
        (
            oldest[0].txid.as_str(),
            oldest[0].height,
            oldest[0].received
        ),
        (H9_COINBASE, 9, 5_000_000_000)
    );
    assert_eq!(
        (
            oldest[1].txid.as_str(),
            oldest[1].sent,
            oldest[1].received,
            oldest[1].net
        ),
        (FIRST_PAYMENT, 5_000_000_000, 4_000_000_000, -1_000_000_000)
    );
    assert!(oldest.windows(2).all(|w| w[0].height <= w[1].height));

    // Small pages, either order, walk exactly the same entries.
    let (paged, pages) = all_history(
        &mut c.addresses,
        history_request(SATOSHI_H9, pb::Order::OldestFirst, 1),
    )
    .await;
    assert_eq!((paged.len(), pages), (oldest.len(), oldest.len()));
    assert_eq!(txids(&paged), txids(&oldest));
    let (mut newest, _) = all_history(
        &mut c.addresses,
        history_request(SATOSHI_H9, pb::Order::NewestFirst, 2),
    )
    .await;
    newest.reverse();
    assert_eq!(txids(&newest), txids(&oldest));

    // A height range keeps exactly the entries inside it.
    let mut ranged = history_request(SATOSHI_H9, pb::Order::NewestFirst, 1);
    (ranged.min_height, ranged.max_height) = (Some(9), Some(170));
    let (inside, _) = all_history(&mut c.addresses, ranged).await;
    assert_eq!(txids(&inside), [FIRST_PAYMENT, H9_COINBASE]);

    // A token only resumes the listing it came from.
    let first = c
        .addresses
        .list_address_history(history_request(SATOSHI_H9, pb::Order::OldestFirst, 1))
        .await
        .unwrap()
        .into_inner();
    let mut other = history_request(SATOSHI_H9, pb::Order::NewestFirst, 1);
    other.page_token = first.next_page_token;
    let e = c.addresses.list_address_history(other).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("page_token: "), "{}", e.message());

    // Unspent outputs, paged, add up to the balance.
    let (mut utxos, mut token) = (Vec::new(), String::new());
    loop {
        let page = c
            .addresses
            .list_address_utxos(pb::ListAddressUtxosRequest {
                address: SATOSHI_H9.into(),
                page_size: 1,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        utxos.extend(page.utxos);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(utxos.len() as u64, s.utxo_count);
    assert_eq!(utxos.iter().map(|u| u.value).sum::<u64>(), s.balance);
    assert!(
        utxos.iter().all(|u| u.txid != H9_COINBASE),
        "spent in block 170"
    );
}

fn txids(entries: &[pb::HistoryEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.txid.as_str()).collect()
}

#[tokio::test]
async fn p2pk_scripts_are_found_under_their_p2pkh_address() {
    let f = serve_blk00000(&[]);
    let mut c = f.server.connect().await;
    let by_script = c
        .addresses
        .get_address_summary(pb::GetAddressSummaryRequest {
            address: GENESIS_P2PK.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let by_address = c
        .addresses
        .get_address_summary(pb::GetAddressSummaryRequest {
            address: GENESIS_ADDR.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_script, by_address);
    assert_eq!(
        (
            by_script.address.as_str(),
            by_script.first_seen_height,
            by_script.received
        ),
        (GENESIS_ADDR, 0, 5_000_000_000)
    );
}

#[tokio::test]
async fn batch_summaries_mark_unused_addresses_and_name_malformed_ones() {
    let f = serve_blk00000(&[]);
    let mut c = f.server.connect().await;
    // A valid mainnet address the first 4522 blocks never used.
    let unused = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";
    let answer = c
        .addresses
        .batch_get_address_summaries(pb::BatchGetAddressSummariesRequest {
            addresses: vec![SATOSHI_H9.into(), unused.into(), HAL.into()],
        })
        .await
        .unwrap()
        .into_inner();
    let found: Vec<_> = answer
        .results
        .iter()
        .map(|r| (r.address.as_str(), r.found))
        .collect();
    assert_eq!(found, [(SATOSHI_H9, true), (unused, false), (HAL, true)]);
    let single = c
        .addresses
        .get_address_summary(pb::GetAddressSummaryRequest {
            address: HAL.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.results[2].summary.as_ref(), Some(&single));

    let e = c
        .addresses
        .batch_get_address_summaries(pb::BatchGetAddressSummariesRequest {
            addresses: vec![
                SATOSHI_H9.into(),
                "1BoatSLRHtKNngkdXEeobR76b53LETtpyX".into(),
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("addresses[1]: "), "{}", e.message());

    let e = c
        .addresses
        .batch_get_address_summaries(pb::BatchGetAddressSummariesRequest {
            addresses: vec![SATOSHI_H9.into(); satflow_query::server::MAX_BATCH + 1],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bad_requests_get_codes_that_name_the_problem() {
    let f = serve_blk00000(&[]);
    let mut c = f.server.connect().await;
    let tx = |txid: &str| pb::GetTransactionRequest {
        txid: txid.into(),
        ..Default::default()
    };
    let summary = |a: &str| pb::GetAddressSummaryRequest { address: a.into() };
    let block = |id| pb::GetBlockRequest {
        id: Some(id),
        ..Default::default()
    };
    use pb::get_block_request::Id;

    let cases: Vec<(Result<(), tonic::Status>, Code, &str)> = vec![
        (
            c.chain.get_transaction(tx("f4184fc5")).await.map(drop),
            Code::InvalidArgument,
            "txid: ",
        ),
        (
            c.chain
                .get_transaction(tx(&"zz".repeat(32)))
                .await
                .map(drop),
            Code::InvalidArgument,
            "txid: ",
        ),
        (
            c.chain
                .get_transaction(tx(&"00".repeat(32)))
                .await
                .map(drop),
            Code::NotFound,
            "not in the index",
        ),
        (
            c.addresses
                .get_address_summary(summary("1notanaddress"))
                .await
                .map(drop),
            Code::InvalidArgument,
            "address: ",
        ),
        (
            c.addresses.get_address_summary(summary("")).await.map(drop),
            Code::InvalidArgument,
            "address: ",
        ),
        // A testnet address sent to a mainnet index.
        (
            c.addresses
                .get_address_summary(summary("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"))
                .await
                .map(drop),
            Code::InvalidArgument,
            "not an address of the main network",
        ),
        (
            c.addresses
                .get_address_summary(summary("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"))
                .await
                .map(drop),
            Code::NotFound,
            "no history",
        ),
        (
            c.chain
                .get_block(block(Id::Height(999_999)))
                .await
                .map(drop),
            Code::NotFound,
            "no block at height 999999",
        ),
        (
            c.chain
                .get_block(block(Id::Hash("beef".into())))
                .await
                .map(drop),
            Code::InvalidArgument,
            "hash: ",
        ),
        (
            c.chain
                .get_block(pb::GetBlockRequest::default())
                .await
                .map(drop),
            Code::InvalidArgument,
            "id: ",
        ),
        (
            c.addresses
                .list_address_history(pb::ListAddressHistoryRequest {
                    address: HAL.into(),
                    page_token: "garbage".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Code::InvalidArgument,
            "page_token: ",
        ),
        (
            c.addresses
                .list_address_history(pb::ListAddressHistoryRequest {
                    address: HAL.into(),
                    min_height: Some(10),
                    max_height: Some(9),
                    ..Default::default()
                })
                .await
                .map(drop),
            Code::InvalidArgument,
            "min_height: ",
        ),
        (
            c.addresses
                .list_address_history(pb::ListAddressHistoryRequest {
                    address: HAL.into(),
                    order: 9,
                    ..Default::default()
                })
                .await
                .map(drop),
            Code::InvalidArgument,
            "order: ",
        ),
    ];
    for (i, (got, code, says)) in cases.into_iter().enumerate() {
        let e = got.expect_err(&format!("case {i} should fail"));
        assert_eq!(e.code(), code, "case {i}: {e:?}");
        assert!(
            e.message().contains(says),
            "case {i}: {:?} lacks {says:?}",
            e.message()
        );
    }

    // A page size over the limit is clamped, not refused.
    let page = c
        .chain
        .get_block(pb::GetBlockRequest {
            id: Some(Id::Height(170)),
            tx_page_size: u32::MAX,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.txids.len(), 2);
}

/// A unary call over bare HTTP/2 with `grpc-timeout: timeout`; returns
/// the grpc-status and grpc-message the server answered. (tonic's client
/// enforces deadlines itself and reports CANCELLED, hiding the server's code.)
async fn bare_call(
    addr: &str,
    path: &str,
    request: impl prost::Message,
    timeout: &str,
) -> (i32, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let head = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(head, false).unwrap();
    let message = request.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    body.send_data(bytes::Bytes::from(frame), true).unwrap();
    let (parts, mut stream) = response.await.unwrap().into_parts();
    let trailers = match parts.headers.contains_key("grpc-status") {
        true => parts.headers,
        false => {
            while let Some(data) = stream.data().await {
                data.unwrap();
            }
            stream.trailers().await.unwrap().expect("trailers")
        }
    };
    let text = |k: &str| {
        trailers
            .get(k)
            .map_or(String::new(), |v| v.to_str().unwrap().to_string())
    };
    (text("grpc-status").parse().unwrap(), text("grpc-message"))
}

#[tokio::test]
async fn an_expired_deadline_is_deadline_exceeded() {
    let f = serve_blk00000(&[]);
    a_past_deadline_is_exceeded_and_a_generous_one_met(&f.server.addr).await;
}

/// A summary asked with a deadline already past is DEADLINE_EXCEEDED, and
/// one asked with 10 s is answered.
async fn a_past_deadline_is_exceeded_and_a_generous_one_met(addr: &str) {
    let path = "/satflow.v1.Addresses/GetAddressSummary";
    let request = pb::GetAddressSummaryRequest {
        address: SATOSHI_H9.into(),
    };
    let (code, message) = bare_call(addr, path, request.clone(), "1n").await;
    assert_eq!(code, Code::DeadlineExceeded as i32, "{message}");
    let (code, message) = bare_call(addr, path, request, "10S").await;
    assert_eq!(code, Code::Ok as i32, "{message}");
}

/// `n` calls at once, each asking for `MAX_BATCH` summaries of one
/// address (tens of ms of reading each).
fn batches_at_once(
    c: &client::Clients,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<(), tonic::Status>>> {
    (0..n)
        .map(|_| {
            let mut c = c.clone();
            tokio::spawn(async move {
                let addresses = vec![SATOSHI_H9.to_string(); satflow_query::server::MAX_BATCH];
                c.addresses
                    .batch_get_address_summaries(pb::BatchGetAddressSummariesRequest { addresses })
                    .await
                    .map(drop)
            })
        })
        .collect()
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_refused_at_once() {
    let f = serve_blk00000(&["--max-in-flight", "1"]);
    let c = f.server.connect().await;
    // 32 callers at once, each asking for 1,000 summaries (tens of ms of work).
    let mut codes = Vec::new();
    for call in batches_at_once(&c, 32) {
        codes.push(call.await.unwrap().err().map_or(Code::Ok, |e| e.code()));
    }
    assert!(codes.contains(&Code::Ok), "{codes:?}");
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Code::Ok | Code::ResourceExhausted)),
        "{codes:?}"
    );
}

#[tokio::test]
async fn health_and_short_deadlines_answer_while_every_reader_is_busy() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    // One reader, kept busy by 24 calls of 1,000 summaries each (tens of
    // ms apiece, so about a second of reading queued behind it).
    let f = serve_blk00000(&["--readers", "1"]);
    let c = f.server.connect().await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let (mut c, done) = (c.clone(), done.clone());
            tokio::spawn(async move {
                let addresses = vec![SATOSHI_H9.to_string(); satflow_query::server::MAX_BATCH];
                c.addresses
                    .batch_get_address_summaries(pb::BatchGetAddressSummariesRequest { addresses })
                    .await
                    .unwrap();
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    // Until the first batch is answered, the queue is surely full.
    while done.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let channel = tonic::transport::Endpoint::from_shared(f.server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "satflow.v1.Addresses".into(),
        })
        .await
        .unwrap();
    // A read with a deadline shorter than the queue gets DEADLINE_EXCEEDED
    // from its wait for a reader, not an answer after the deadline.
    let path = "/satflow.v1.Addresses/GetAddressSummary";
    let request = pb::GetAddressSummaryRequest {
        address: SATOSHI_H9.into(),
    };
    let (code, message) = bare_call(&f.server.addr, path, request, "20m").await;
    assert_eq!(code, Code::DeadlineExceeded as i32, "{message}");
    // Both were answered with most of the reading still queued: the
    // transport's threads never wait on the index.
    let answered = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(answered < 12, "{answered} of 24 batches were read first");
    for call in calls {
        call.await.unwrap();
    }
}

/// A request whose caller sets no deadline still ends: at the server's
/// limit, RESOURCE_EXHAUSTED naming it, whether it waited for a reader or
/// was reading. A caller's shorter deadline keeps its own code.
#[tokio::test]
async fn requests_without_a_deadline_end_at_the_servers_limit() {
    // One reader and 50 ms a request: 24 batches of 1,000 summaries (tens
    // of ms apiece) cannot all be read in time.
    let f = serve_blk00000(&["--readers", "1", "--max-request-ms", "50"]);
    let c = f.server.connect().await;
    let mut limited = 0;
    for call in batches_at_once(&c, 24) {
        match call.await.unwrap() {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(
                    e.message()
                        .contains("50 ms (satflow serve --max-request-ms)"),
                    "{e:?}"
                );
                limited += 1;
            }
        }
    }
    assert!(limited > 0, "every batch was read within 50 ms");
    // A caller's own deadline keeps its code; alone, a summary is read
    // well within the limit.
    a_past_deadline_is_exceeded_and_a_generous_one_met(&f.server.addr).await;
}

#[tokio::test]
async fn health_and_reflection_work_out_of_the_box() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let f = serve_blk00000(&[]);
    let channel = tonic::transport::Endpoint::from_shared(f.server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    for service in ["satflow.v1.Chain", "satflow.v1.Addresses"] {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for name in [
        "satflow.v1.Chain",
        "satflow.v1.Addresses",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
}

#[tokio::test]
async fn a_token_protected_tls_server_refuses_callers_without_the_token() {
    let blocks = blocks_dir(&["mainnet/blk00000_first1MiB.dat"]);
    let db = tempfile::tempdir().unwrap();
    index(blocks.path(), db.path());
    let token_file = db.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let (cert, key) = (data("tls/server.pem"), data("tls/server.key"));
    let server = Server::start(
        db.path(),
        &[
            "--token-file",
            token_file.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = format!(
        "https://localhost:{}",
        server.addr.rsplit(':').next().unwrap()
    );
    let ca = std::fs::read(data("tls/ca.pem")).unwrap();
    let with = |token: Option<&str>| ConnectOptions {
        token: token.map(Into::into),
        ca_pem: Some(ca.clone()),
    };
    let status = |c: &mut client::Clients| {
        let mut chain = c.chain.clone();
        async move { chain.get_status(pb::GetStatusRequest {}).await }
    };
    for token in [None, Some("wrong-token")] {
        let mut c = client::connect(&url, with(token)).await.unwrap();
        let e = status(&mut c).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{token:?}: {e:?}");
    }
    let mut c = client::connect(&url, with(Some("s3cret-token")))
        .await
        .unwrap();
    let s = status(&mut c).await.unwrap().into_inner();
    assert_eq!((s.network.as_str(), s.tip_height), ("main", 4521));
    // Plain text to a TLS port does not get an answer.
    let plain = client::connect(
        &server.url(),
        ConnectOptions {
            token: Some("s3cret-token".into()),
            ..Default::default()
        },
    )
    .await;
    if let Ok(mut c) = plain {
        assert!(status(&mut c).await.is_err());
    }
}

#[tokio::test]
async fn the_server_follows_the_writer_block_by_block() {
    // The node has written the first 2000 blocks; the server starts there.
    let whole = std::fs::read(data("mainnet/blk00000_first1MiB.dat")).unwrap();
    let cut = records(&whole)[2000].0;
    let blocks = tempfile::tempdir().unwrap();
    let blk = blocks.path().join("blk00000.dat");
    std::fs::write(&blk, &whole[..cut]).unwrap();
    let db = tempfile::tempdir().unwrap();
    assert_eq!(index(blocks.path(), db.path()).tip_height, Some(1999));
    let server = Server::start(db.path(), &["--follow-ms", "50"]);
    let mut c = server.connect().await;
    let tip = |s: pb::ChainStatus| s.tip_height;
    assert_eq!(
        tip(c
            .chain
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()),
        1999
    );

    // The node appends the rest; a second process indexes it while the
    // server keeps answering.
    std::fs::write(&blk, &whole).unwrap();
    let writer = std::thread::spawn({
        let (blocks, db) = (blocks.path().to_owned(), db.path().to_owned());
        move || index(&blocks, &db)
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = c
            .chain
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        // Whatever tip the server shows, that whole block is there: its
        // last transaction resolves, inputs and all.
        let block = c
            .chain
            .get_block(pb::GetBlockRequest {
                id: Some(pb::get_block_request::Id::Height(s.tip_height)),
                tx_page_size: 10_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(block.txids.len() as u32, block.tx_count);
        let last = get_tx(&mut c, block.txids.last().unwrap()).await;
        assert_eq!(last.height, s.tip_height);
        seen.push(s.tip_height);
        if s.tip_height == 4521 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never reached 4521: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(writer.join().unwrap().tip_height, Some(4521));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
}

const GENESIS_COINBASE: &str = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b";

async fn utxos_of(c: &mut satflow_query::client::AddressesClient, address: &str) -> Vec<pb::Utxo> {
    c.list_address_utxos(pb::ListAddressUtxosRequest {
        address: address.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .utxos
}

#[tokio::test]
async fn p2pk_coinbase_outputs_carry_their_script_type_and_coinbase_flag() {
    let f = serve_blk00000(&[]);
    let mut c = f.server.connect().await;
    let tx = get_tx(&mut c, H9_COINBASE).await;
    let raw = c
        .chain
        .get_raw_transaction(pb::GetTransactionRequest {
            txid: H9_COINBASE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let decoded: bitcoin::Transaction = deserialize(&raw.raw).unwrap();
    let out = &tx.outputs[0];
    assert_eq!(out.script_kind(), pb::ScriptType::P2pk);
    assert_eq!(out.script_type, "p2pk");
    assert_eq!(
        out.script_pubkey,
        hex::encode(decoded.output[0].script_pubkey.as_bytes())
    );
    // <65-byte key> OP_CHECKSIG: a push of 0x41 bytes, then 0xac.
    assert_eq!(out.script_pubkey.len(), 2 * 67);
    assert!(out.script_pubkey.starts_with("4104") && out.script_pubkey.ends_with("ac"));
    assert_eq!(out.op_return_data, "");
    // No witness: the wtxid is the txid.
    assert_eq!(tx.wtxid, H9_COINBASE);

    // The genesis coin is still unspent, and says it came from a coinbase.
    let utxos = utxos_of(&mut c.addresses, GENESIS_ADDR).await;
    let genesis = utxos
        .iter()
        .find(|u| u.txid == GENESIS_COINBASE)
        .expect("the genesis coin is never spent");
    assert!(genesis.coinbase);
    assert_eq!(genesis.script_kind(), pb::ScriptType::P2pk);
    assert_eq!(genesis.script_pubkey, GENESIS_P2PK);
    // The flag is the paying transaction's.
    let hal = utxos_of(&mut c.addresses, HAL).await;
    assert!(!hal.is_empty());
    for u in &hal {
        let paid_by = get_tx(&mut c, &u.txid).await;
        assert_eq!(u.coinbase, paid_by.coinbase, "{}", u.txid);
    }

    // Without the blk files, what the index holds is still answered.
    drop(f._blocks);
    let tx = get_tx(&mut c, H9_COINBASE).await;
    let out = &tx.outputs[0];
    assert_eq!(
        (out.script_kind(), out.address.as_str(), out.value),
        (pb::ScriptType::P2pk, SATOSHI_H9, 5_000_000_000)
    );
    assert_eq!((out.script_pubkey.as_str(), tx.wtxid.as_str()), ("", ""));
    let utxos = utxos_of(&mut c.addresses, GENESIS_ADDR).await;
    let genesis = utxos.iter().find(|u| u.txid == GENESIS_COINBASE).unwrap();
    assert_eq!(
        (
            genesis.coinbase,
            genesis.script_kind(),
            genesis.script_pubkey.as_str()
        ),
        (true, pb::ScriptType::P2pk, "")
    );
}

const TAPROOT: u32 = 866342;
const TAPROOT_HASH: &str = "000000000000000000014ce9ba7c6760053c3c82ce6ab43d60afb101d3c8f1f1";

/// Block 866342 indexed on its own (`--start-at`), with its prevouts.
fn serve_taproot_block() -> Fixture {
    let (blocks, db, _) = window(TAPROOT, TAPROOT_HASH, true);
    let server = Server::start(db.path(), &[]);
    Fixture {
        _blocks: blocks,
        _db: db,
        server,
    }
}

#[tokio::test]
async fn segwit_transactions_carry_their_wtxid_scripts_and_op_return_data() {
    let f = serve_taproot_block();
    let mut c = f.server.connect().await;
    let block = raw_block(TAPROOT);
    let (mut segwit, mut op_returns) = (0, 0);
    for t in &block.txdata {
        let txid = t.compute_txid();
        let got = get_tx(&mut c, &txid.to_string()).await;
        assert_eq!(got.wtxid, t.compute_wtxid().to_string(), "{txid}");
        segwit += usize::from(got.wtxid != got.txid);
        for (o, want) in got.outputs.iter().zip(&t.output) {
            let script = want.script_pubkey.as_bytes();
            assert_eq!(o.script_pubkey, hex::encode(script), "{txid}:{}", o.vout);
            let (kind, _) = satflow_schema::script::classify(script);
            assert_eq!(o.script_type, kind.name(), "{txid}:{}", o.vout);
            if let Ok(a) =
                bitcoin::Address::from_script(&want.script_pubkey, bitcoin::Network::Bitcoin)
            {
                assert_eq!(o.address, a.to_string(), "{txid}:{}", o.vout);
            }
            if want.script_pubkey.is_op_return() {
                op_returns += 1;
                assert_eq!(o.script_kind(), pb::ScriptType::OpReturn);
                assert!(!o.op_return_data.is_empty() || script.len() == 1);
            } else {
                assert_eq!(o.op_return_data, "");
            }
        }
    }
    assert!(segwit > 1000, "a taproot-era block: {segwit} segwit txs");
    assert!(op_returns > 0);

    // The coinbase's witness commitment (BIP141): OP_RETURN, a 36-byte push
    // of aa21a9ed and the commitment; its payload is that push.
    let coinbase = get_tx(&mut c, &block.txdata[0].compute_txid().to_string()).await;
    let commitment = coinbase
        .outputs
        .iter()
        .find(|o| o.script_pubkey.starts_with("6a24aa21a9ed"))
        .expect("a segwit block's coinbase commits to its wtxids");
    assert_eq!(commitment.op_return_data, commitment.script_pubkey[4..]);
}

#[tokio::test]
async fn min_height_below_a_late_start_is_clipped_to_it() {
    let f = serve_taproot_block();
    let mut c = f.server.connect().await;
    let coinbase = get_tx(
        &mut c,
        &raw_block(TAPROOT).txdata[0].compute_txid().to_string(),
    )
    .await;
    let pool = coinbase
        .outputs
        .iter()
        .find(|o| !o.address.is_empty())
        .unwrap()
        .address
        .clone();
    let mut all = history_request(&pool, pb::Order::OldestFirst, 100);
    let (everything, _) = all_history(&mut c.addresses, all.clone()).await;
    assert!(everything.iter().any(|e| e.txid == coinbase.txid));
    // From genesis on: the index's start is where its history begins.
    all.min_height = Some(0);
    let (from_genesis, _) = all_history(&mut c.addresses, all.clone()).await;
    assert_eq!(txids(&from_genesis), txids(&everything));
    // Wholly below the start: nothing, not NOT_FOUND.
    all.max_height = Some(TAPROOT - 1);
    let (before, _) = all_history(&mut c.addresses, all).await;
    assert!(before.is_empty());
}

#[tokio::test]
async fn witness_v1_and_later_programs_show_their_bech32m_address() {
    use common::build::*;
    let anchor = bitcoin::ScriptBuf::from_bytes(vec![0x51, 0x02, 0x4e, 0x73]);
    let v2 = bitcoin::ScriptBuf::from_bytes([&[0x52, 0x10][..], &[7u8; 16]].concat());
    let genesis = regtest_genesis();
    let cb = coinbase(
        b"anchors",
        &[
            (240, anchor.clone()),
            (50_0000_0000, v2.clone()),
            (1, p2pkh(1)),
        ],
    );
    let b1 = block(genesis.block_hash(), 1, vec![cb.clone()]);
    let blocks = tempfile::tempdir().unwrap();
    write_blk(&blocks.path().join("blk00000.dat"), &[genesis, b1]);
    let db = tempfile::tempdir().unwrap();
    index(blocks.path(), db.path());
    let server = Server::start(db.path(), &[]);
    let mut c = server.connect().await;

    let bech32m = |s: &bitcoin::ScriptBuf| {
        bitcoin::Address::from_script(s, bitcoin::Network::Regtest)
            .unwrap()
            .to_string()
    };
    let (anchor_addr, v2_addr) = (bech32m(&anchor), bech32m(&v2));
    assert!(anchor_addr.starts_with("bcrt1p"), "{anchor_addr}");
    assert!(v2_addr.starts_with("bcrt1z"), "{v2_addr}");
    let tx = get_tx(&mut c, &cb.compute_txid().to_string()).await;
    let shown: Vec<_> = tx
        .outputs
        .iter()
        .map(|o| (o.address.as_str(), o.script_kind()))
        .collect();
    assert_eq!(
        shown[..2],
        [
            (anchor_addr.as_str(), pb::ScriptType::WitnessUnknown),
            (v2_addr.as_str(), pb::ScriptType::WitnessUnknown)
        ]
    );

    for (addr, script, value) in [(&anchor_addr, &anchor, 240), (&v2_addr, &v2, 50_0000_0000)] {
        // By its address, its script in hex, or upper case: found, and
        // shown as its address.
        for asked in [
            addr.clone(),
            hex::encode(script.as_bytes()),
            addr.to_uppercase(),
        ] {
            let s = c
                .addresses
                .get_address_summary(pb::GetAddressSummaryRequest {
                    address: asked.clone(),
                })
                .await
                .unwrap_or_else(|e| panic!("{asked}: {e}"))
                .into_inner();
            assert_eq!(
                (s.address.as_str(), s.received, s.balance, s.tx_count),
                (addr.as_str(), value, value, 1),
                "{asked}"
            );
        }
        let utxos = utxos_of(&mut c.addresses, addr).await;
        assert_eq!(utxos.len(), 1);
        assert_eq!(
            (
                utxos[0].coinbase,
                utxos[0].script_kind(),
                utxos[0].script_pubkey.clone()
            ),
            (
                true,
                pb::ScriptType::WitnessUnknown,
                hex::encode(script.as_bytes())
            )
        );
    }
    let batch = c
        .addresses
        .batch_get_address_summaries(pb::BatchGetAddressSummariesRequest {
            addresses: vec![anchor_addr.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        batch.results[0].summary.as_ref().unwrap().address,
        anchor_addr
    );
}
