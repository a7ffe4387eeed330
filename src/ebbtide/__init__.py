"""ebbtide: a Reverse ETL engine."""
