//! The nodes this console federates: every query fans out to all of them at once, each under
//! `node_timeout`; the answer lists each node's result or why it did not answer, so one dead
//! node never fails a page.

use std::sync::RwLock;
use std::time::Duration;

use bulwark::admin::protocol::Request;
use bulwark::admin::remote::Federation;
use bulwark::config::ConsoleNode;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Serialize)]
pub struct NodeAnswer {
    pub node: String,
    /// The node's result when it answered `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why there is no result: unreachable, timed out, or the node's own error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// False when the node could not be reached at all (as opposed to refusing the request).
    pub reachable: bool,
}

pub struct Nodes {
    pub client: Federation,
    /// Changed by the Nodes page (`node_list`); read as a snapshot per query.
    pub nodes: RwLock<Vec<ConsoleNode>>,
    pub timeout: Duration,
}

impl Nodes {
    /// The nodes now, in their order.
    pub fn list(&self) -> Vec<ConsoleNode> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, list: Vec<ConsoleNode>) {
        *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = list;
    }

    pub async fn ask(&self, node: &ConsoleNode, request: &Request) -> NodeAnswer {
        let outcome = self
            .client
            .call(&node.address, node.server_name(), request, self.timeout)
            .await;
        let (result, error, reachable) = match outcome {
            Ok(response) if response.ok => (Some(response.result), None, true),
            Ok(response) => (None, response.error, true),
            Err(e) => (None, Some(e.to_string()), false),
        };
        NodeAnswer {
            node: node.name.clone(),
            result,
            error,
            reachable,
        }
    }

    /// `request` to every node (or only `only`), concurrently.
    pub async fn fan_out(&self, request: &Request, only: Option<&str>) -> Vec<NodeAnswer> {
        let chosen: Vec<ConsoleNode> = self
            .list()
            .into_iter()
            .filter(|n| only.is_none_or(|name| n.name == name))
            .collect();
        let mut asks: Vec<_> = chosen
            .iter()
            .map(|node| Box::pin(self.ask(node, request)))
            .collect();
        join_all(&mut asks).await
    }
}

/// Polls every ask on each wake-up until all are done: the nodes are asked concurrently, and
/// the answers keep the nodes' order.
async fn join_all<F: std::future::Future<Output = NodeAnswer> + Unpin>(
    futures: &mut [F],
) -> Vec<NodeAnswer> {
    let mut results: Vec<Option<NodeAnswer>> = (0..futures.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, future) in results.iter_mut().zip(futures.iter_mut()) {
            if slot.is_none() {
                match std::pin::Pin::new(future).poll(cx) {
                    std::task::Poll::Ready(answer) => *slot = Some(answer),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

impl Nodes {
    /// One node's whole response (its error and result both kept), by name.
    pub async fn ask_named(
        &self,
        name: &str,
        request: &Request,
    ) -> bulwark::admin::protocol::Response {
        let Some(node) = self.list().into_iter().find(|n| n.name == name) else {
            return bulwark::admin::protocol::Response::error(format!("no node {name:?}"));
        };
        match self
            .client
            .call(&node.address, node.server_name(), request, self.timeout)
            .await
        {
            Ok(response) => response,
            Err(e) => bulwark::admin::protocol::Response::error(format!(
                "node {name} did not answer: {e}"
            )),
        }
    }
}
