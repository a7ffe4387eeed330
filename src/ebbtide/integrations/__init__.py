"""ebbtide inside orchestrators, each an optional extra: `ebbtide.integrations.dagster`."""
