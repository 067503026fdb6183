//! The `ironclad` command-line client.
