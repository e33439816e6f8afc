"""Stored Responses-API responses: what each one was asked and answered, for `previous_response_id` and lookups."""
