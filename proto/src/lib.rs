//! satflow's gRPC contract, generated from `proto/satflow/v1/*.proto`.

pub mod v1 {
    tonic::include_proto!("satflow.v1");

    /// Encoded `FileDescriptorSet` of the package, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/satflow_descriptor.bin"));
}
