//! virtio-mmio passthrough (placeholder; being written).
