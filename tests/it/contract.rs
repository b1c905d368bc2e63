//! The OpenAPI 3.1 document (openapi/device-logs-api.json) as a test
//! oracle: every answer the server gives must be a documented status of its
//! route, with a body that validates against the documented schema.

use serde_json::{json, Value};

use crate::api_support::LOGS_ROUTE;

/// The OpenAPI document, to check answers against.
pub struct Contract(Value);

impl Contract {
    pub fn load() -> Self {
        let text = include_str!("../../openapi/device-logs-api.json");
        let doc: Value = serde_json::from_str(text).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        Contract(doc)
    }

    /// Panics unless `route`/`method` documents `status` and `body`
    /// validates against its JSON schema.
    pub fn check(&self, route: &str, method: &str, status: u16, body: &Value) {
        let op = &self.0["paths"][route][method.to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {route} is not documented");
        let mut response = op["responses"][status.to_string()].clone();
        assert!(
            response.is_object(),
            "{method} {route} {status} is not documented"
        );
        if let Some(Value::String(r)) = response.get("$ref") {
            let name = r.trim_start_matches("#/components/responses/");
            response = self.0["components"]["responses"][name].clone();
        }
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {route} {status} has no JSON schema"
        );
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.0["components"], "allOf": [schema],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap();
        let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{method} {route} {status}: {body} does not match: {errors:?}"
        );
    }

    /// `check`, plus the expected status and, for errors, the expected code.
    pub fn expect(&self, got: &(u16, Value), method: &str, status: u16, code: Option<&str>) {
        assert_eq!(
            got.0, status,
            "{method}: expected {status}, got {} {}",
            got.0, got.1
        );
        // Methods the resource does not have answer 405, documented under PUT.
        let documented = if method == "GET" { "GET" } else { "PUT" };
        self.check(LOGS_ROUTE, documented, got.0, &got.1);
        if let Some(code) = code {
            assert_eq!(got.1["code"], code, "{}", got.1);
        }
    }
}
