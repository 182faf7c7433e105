//! What the queue pods themselves say: per-queue counts read from each pod's
//! `GET /v1/queues`, a few pods at a time and each within a timeout, so a hung pod slows
//! a reconcile by one timeout at most. Used for the counts in status and to tell when a
//! pod being scaled away holds no more messages.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use queuelet::api::model::ListQueuesQuery;
use queuelet::client::{Client as QueueClient, ClientError};

use crate::build::Instance;
use crate::resource::{QueueStatus, SERVER_PORT};

/// Longest wait for one pod's answer.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(3);
/// Pods asked at the same time, per MessageQueue.
pub const STATS_CONCURRENCY: usize = 4;
/// Queues read per request, and the most pages read from one pod.
const PAGE: usize = 1000;
const MAX_PAGES: usize = 100;

/// The base URL of queue pod `ordinal` of `instance`.
pub type PodUrl = Arc<dyn Fn(&Instance<'_>, i32) -> String + Send + Sync>;

/// The pod's stable DNS name through the headless Service.
pub fn pod_dns_url(instance: &Instance<'_>, ordinal: i32) -> String {
    format!(
        "http://{}-{ordinal}.{}.{}.svc.{}:{SERVER_PORT}",
        instance.stateful_set_name(),
        instance.headless_service_name(),
        instance.namespace,
        instance.defaults.cluster_domain,
    )
}

/// One pod's answer: its queues' counts, or why they could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct PodCounts {
    pub ordinal: i32,
    pub queues: Result<Vec<QueueStatus>, String>,
}

/// Messages `queues` still hold: visible, in flight or delayed.
pub fn messages_held(queues: &[QueueStatus]) -> i64 {
    queues
        .iter()
        .map(|q| q.active + q.inactive + q.delayed)
        .sum()
}

/// Reads the queue pods over HTTP.
pub struct Sidecars {
    http: reqwest::Client,
    pub pod_url: PodUrl,
}

impl Sidecars {
    pub fn new() -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(STATS_TIMEOUT)
            .connect_timeout(STATS_TIMEOUT)
            .build()?;
        Ok(Sidecars {
            http,
            pod_url: Arc::new(pod_dns_url),
        })
    }

    /// The counts of pods `ordinals` of `instance`, in ordinal order.
    pub async fn counts(
        &self,
        instance: &Instance<'_>,
        token: Option<&str>,
        ordinals: Range<i32>,
    ) -> Vec<PodCounts> {
        let mut pods: Vec<PodCounts> = stream::iter(ordinals)
            .map(|ordinal| {
                let url = (self.pod_url)(instance, ordinal);
                async move {
                    let queues = self
                        .pod_queues(&url, token)
                        .await
                        .map_err(|err| format!("{url}: {err}"));
                    PodCounts { ordinal, queues }
                }
            })
            .buffer_unordered(STATS_CONCURRENCY)
            .collect()
            .await;
        pods.sort_by_key(|p| p.ordinal);
        pods
    }

    async fn pod_queues(
        &self,
        url: &str,
        token: Option<&str>,
    ) -> Result<Vec<QueueStatus>, ClientError> {
        let mut client = QueueClient::with_http(url, self.http.clone())?;
        if let Some(token) = token {
            client = client.with_token(token);
        }
        let mut queues = Vec::new();
        let mut offset = Some(0);
        for _ in 0..MAX_PAGES {
            let Some(from) = offset else { break };
            let page = client
                .list_queues(&ListQueuesQuery {
                    prefix: None,
                    offset: Some(from),
                    limit: Some(PAGE),
                })
                .await?;
            queues.extend(page.queues.into_iter().map(|q| QueueStatus {
                name: q.name,
                active: saturate(q.stats.active),
                inactive: saturate(q.stats.inactive),
                delayed: saturate(q.stats.delayed),
            }));
            offset = page.next_offset;
        }
        Ok(queues)
    }
}

fn saturate(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Each queue's counts added up over the pods that answered, by name.
pub fn sum(pods: &[PodCounts]) -> Vec<QueueStatus> {
    let mut totals: BTreeMap<&str, QueueStatus> = BTreeMap::new();
    for queue in pods.iter().filter_map(|p| p.queues.as_ref().ok()).flatten() {
        let total = totals.entry(&queue.name).or_insert_with(|| QueueStatus {
            name: queue.name.clone(),
            active: 0,
            inactive: 0,
            delayed: 0,
        });
        total.active = total.active.saturating_add(queue.active);
        total.inactive = total.inactive.saturating_add(queue.inactive);
        total.delayed = total.delayed.saturating_add(queue.delayed);
    }
    totals.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str, active: i64, inactive: i64, delayed: i64) -> QueueStatus {
        QueueStatus {
            name: name.into(),
            active,
            inactive,
            delayed,
        }
    }

    #[test]
    fn sums_by_queue_over_the_pods_that_answered() {
        let pods = [
            PodCounts {
                ordinal: 0,
                queues: Ok(vec![queue("b", 1, 2, 3), queue("a", 5, 0, 0)]),
            },
            PodCounts {
                ordinal: 1,
                queues: Err("timed out".into()),
            },
            PodCounts {
                ordinal: 2,
                queues: Ok(vec![queue("a", 1, 1, 1)]),
            },
        ];
        assert_eq!(sum(&pods), vec![queue("a", 6, 1, 1), queue("b", 1, 2, 3)]);
        assert_eq!(messages_held(pods[0].queues.as_ref().unwrap()), 11);
    }
}
