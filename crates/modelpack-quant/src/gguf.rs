//! GGUF block formats (Q8_0, Q4_0, Q4_1, ...).
