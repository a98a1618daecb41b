DROP TABLE api_key_callers;
