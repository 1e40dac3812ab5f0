//! Connecting to a `satflow serve`: the generated clients, with TLS and a
//! bearer token when the server asks for them.

use anyhow::Context;
use satflow_proto::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

pub type ChainClient = pb::chain_client::ChainClient<InterceptedService<Channel, Bearer>>;
pub type AddressesClient =
    pb::addresses_client::AddressesClient<InterceptedService<Channel, Bearer>>;
pub type ClustersClient = pb::clusters_client::ClustersClient<InterceptedService<Channel, Bearer>>;
pub type TaintClient = pb::taint_client::TaintClient<InterceptedService<Channel, Bearer>>;
pub type RiskClient = pb::risk_client::RiskClient<InterceptedService<Channel, Bearer>>;
pub type PatternsClient = pb::patterns_client::PatternsClient<InterceptedService<Channel, Bearer>>;
pub type WatchesClient = pb::watches_client::WatchesClient<InterceptedService<Channel, Bearer>>;

#[derive(Default)]
pub struct ConnectOptions {
    pub token: Option<String>,
    /// PEM of the CA that signed the server's certificate (for the URL's
    /// host name); enables TLS.
    pub ca_pem: Option<Vec<u8>>,
}

#[derive(Clone)]
pub struct Clients {
    pub chain: ChainClient,
    pub addresses: AddressesClient,
    pub clusters: ClustersClient,
    pub taint: TaintClient,
    pub risk: RiskClient,
    pub patterns: PatternsClient,
    pub watches: WatchesClient,
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

pub async fn connect(url: &str, opts: ConnectOptions) -> anyhow::Result<Clients> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("{url:?} is not a server URL"))?
        .tcp_nodelay(true);
    if let Some(ca) = opts.ca_pem {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        endpoint = endpoint.tls_config(tls).context("TLS settings")?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let bearer = Bearer(
        opts.token
            .map(|t| format!("Bearer {t}").parse())
            .transpose()
            .context("the token must be printable ASCII")?,
    );
    Ok(Clients {
        chain: pb::chain_client::ChainClient::with_interceptor(channel.clone(), bearer.clone()),
        addresses: pb::addresses_client::AddressesClient::with_interceptor(
            channel.clone(),
            bearer.clone(),
        ),
        clusters: pb::clusters_client::ClustersClient::with_interceptor(
            channel.clone(),
            bearer.clone(),
        ),
        taint: pb::taint_client::TaintClient::with_interceptor(channel.clone(), bearer.clone()),
        risk: pb::risk_client::RiskClient::with_interceptor(channel.clone(), bearer.clone()),
        patterns: pb::patterns_client::PatternsClient::with_interceptor(
            channel.clone(),
            bearer.clone(),
        ),
        watches: pb::watches_client::WatchesClient::with_interceptor(channel, bearer),
    })
}
