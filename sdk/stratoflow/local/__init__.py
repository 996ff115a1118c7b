"""The local cloud: the embedded in-process backend (moto) and, later, the HTTP dev stack."""
