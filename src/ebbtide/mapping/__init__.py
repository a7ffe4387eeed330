"""The mapping compiler and binder: a mapping checked against its action, then against the
model's columns.

Below the engine, beside the ports: the engine runs what they produce, and the snapshot stores
render payloads from the bound mapping in SQL, so both need these values and neither may import
the other. Pure: pyarrow types, no driver.
"""
