//! PLIC (placeholder; being written).
