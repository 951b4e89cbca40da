//! Reading a partition from S3 over a slow or broken network, through a proxy in front of the S3
//! server, with deliberately short timeouts (1 s): a read that takes longer than every timeout
//! completes while data arrives, and a connection that stalls or is cut in the middle of an object
//! is resumed where it stopped. Every row is read once.

mod support;

use std::net::SocketAddr;

use eventpipe_testkit::s3::S3Server;
use eventpipe_testkit::slow_link::{Fault, LinkSettings, SlowLink};
use eventpipe_transformer::run::run;
use eventpipe_transformer::task::Summary;
use support::{DAY, HEADER, TaskBuilder};

const ROWS: u64 = 20_000;

/// About 700 KB of user events, one setting change per row.
fn large_object() -> Vec<u8> {
    let mut csv = HEADER.to_string();
    for row in 0..ROWS {
        csv.push_str(&format!("{row},setting-{},value-{row},{}\n", row % 7, 1_795_478_400 + row));
    }
    csv.into_bytes()
}

/// Converts one partition holding [`large_object`] with S3 reached through a proxy playing `link`;
/// the proxy is returned to tell which fault it played.
async fn convert_through(link: LinkSettings) -> (Summary, SlowLink) {
    let s3 = S3Server::get().unwrap();
    let (source, sink) = (s3.bucket("slow-src").await.unwrap(), s3.bucket("slow-out").await.unwrap());
    s3.put(&source, &format!("raw/{}/big.csv", DAY.sink_path()), large_object()).await.unwrap();
    let upstream: SocketAddr = s3.endpoint().trim_start_matches("http://").parse().unwrap();
    let proxy = SlowLink::start(upstream, link).await.unwrap();
    let mut task = TaskBuilder::new(&format!("s3://{source}/raw/"), &format!("s3://{sink}/curated/"))
        .s3_endpoint(&proxy.endpoint())
        .build();
    let settings = task.pipeline.s3.as_mut().unwrap();
    settings.read_timeout_seconds = Some(1);
    settings.retry_timeout_seconds = Some(1);
    let summary = run(&task).await.unwrap();
    (summary, proxy)
}

#[tokio::test]
async fn a_read_slower_than_every_timeout_completes() {
    // About 5 s for the object, data arriving every 100 ms.
    let (summary, proxy) = convert_through(LinkSettings { bytes_per_second: 150_000, fault: Fault::None }).await;
    assert_eq!((summary.rows_read, summary.rows_rejected, summary.rows_written), (ROWS, 0, ROWS));
    assert!(summary.seconds > 2.0, "the read was throttled: {} s", summary.seconds);
    assert_eq!(proxy.faults_played(), 0);
}

#[tokio::test]
async fn a_stalled_read_resumes_where_it_stopped() {
    let stall = Fault::Stall { after_bytes: 200_000 };
    let (summary, proxy) = convert_through(LinkSettings { bytes_per_second: 400_000, fault: stall }).await;
    assert_eq!(proxy.faults_played(), 1, "the object's connection stalled");
    assert_eq!((summary.rows_read, summary.rows_rejected, summary.rows_written), (ROWS, 0, ROWS));
}

#[tokio::test]
async fn a_read_cut_after_the_retry_time_resumes_where_it_stopped() {
    // The cut comes about 2 s into the read, after the 1 s within which object_store itself
    // would request the rest.
    let cut = Fault::Cut { after_bytes: 200_000 };
    let (summary, proxy) = convert_through(LinkSettings { bytes_per_second: 100_000, fault: cut }).await;
    assert_eq!(proxy.faults_played(), 1, "the object's connection was cut");
    assert_eq!((summary.rows_read, summary.rows_rejected, summary.rows_written), (ROWS, 0, ROWS));
}
