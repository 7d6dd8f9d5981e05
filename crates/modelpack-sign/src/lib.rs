//! File digests, the package manifest, keys and OpenSSF Model Signing bundles.
