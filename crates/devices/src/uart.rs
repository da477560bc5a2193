//! 16550 UART (placeholder; being written).
