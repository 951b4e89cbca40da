//! Reading an SQS message that announces S3 objects: an S3 event notification (`Records`, sent by
//! the bucket to the queue directly or through SNS), an EventBridge event (`detail-type` "Object
//! Created" / "Object Deleted"), or the test event S3 sends when notifications are set up. Pure.

use serde_json::Value;

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Objects were created or removed: bucket and key of each, in the spellings the key may
    /// have (S3 event notifications encode keys as in a URL form; EventBridge's may not).
    Objects(Vec<ObjectChange>),
    /// The test event S3 sends when a notification configuration is saved, or an event about
    /// something else than objects appearing or going (a restore, a tag): nothing to do.
    Nothing,
}

/// An object that appeared or went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectChange {
    /// The bucket.
    pub bucket: String,
    /// The object's key, in every spelling it may have.
    pub keys: Vec<String>,
}

/// Reads a message body; the error says why it is no notification this reads.
pub fn read(body: &str) -> Result<Message, String> {
    let value: Value = serde_json::from_str(body).map_err(|e| format!("the message is not JSON: {e}"))?;
    // Through SNS, the notification is the text of `Message`.
    if value.get("Type").and_then(Value::as_str) == Some("Notification")
        && let Some(inner) = value.get("Message").and_then(Value::as_str)
    {
        return read(inner);
    }
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Message::Nothing);
    }
    if let Some(records) = value.get("Records").and_then(Value::as_array) {
        let changes: Vec<ObjectChange> = records.iter().filter_map(s3_record).collect::<Result<_, _>>()?;
        return Ok(if changes.is_empty() { Message::Nothing } else { Message::Objects(changes) });
    }
    if value.get("source").and_then(Value::as_str) == Some("aws.s3") {
        return eventbridge(&value);
    }
    Err("the message is neither an S3 event notification nor an EventBridge event of S3".into())
}

/// One record of an S3 event notification: `None` for events about something else than objects
/// appearing or going.
fn s3_record(record: &Value) -> Option<Result<ObjectChange, String>> {
    let name = record.get("eventName").and_then(Value::as_str).unwrap_or_default();
    if !(name.starts_with("ObjectCreated:") || name.starts_with("ObjectRemoved:")) {
        return None;
    }
    let field = |path: &[&str]| path.iter().try_fold(record, |value, key| value.get(key)).and_then(Value::as_str);
    Some(match (field(&["s3", "bucket", "name"]), field(&["s3", "object", "key"])) {
        (Some(bucket), Some(key)) => Ok(ObjectChange { bucket: bucket.to_string(), keys: vec![form_decoded(key)] }),
        _ => Err(format!("the {name} record names no bucket or key")),
    })
}

/// An EventBridge event of S3.
fn eventbridge(value: &Value) -> Result<Message, String> {
    let kind = value.get("detail-type").and_then(Value::as_str).unwrap_or_default();
    if kind != "Object Created" && kind != "Object Deleted" {
        return Ok(Message::Nothing);
    }
    let detail = value.get("detail");
    let field = |path: &[&str]| path.iter().try_fold(detail?, |value, key| value.get(key)).and_then(Value::as_str);
    let (Some(bucket), Some(key)) = (field(&["bucket", "name"]), field(&["object", "key"])) else {
        return Err(format!("the {kind} event names no bucket or key"));
    };
    let mut keys = vec![key.to_string()];
    let decoded = form_decoded(key);
    if decoded != key {
        keys.push(decoded);
    }
    Ok(Message::Objects(vec![ObjectChange { bucket: bucket.to_string(), keys }]))
}

/// A key as S3 event notifications spell it: URL form encoding, `+` for a space.
fn form_decoded(key: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", key.replace('&', "%26")).as_bytes()).next().map(|(_, value)| value.into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(bucket: &str, keys: &[&str]) -> Message {
        Message::Objects(vec![ObjectChange { bucket: bucket.into(), keys: keys.iter().map(|k| k.to_string()).collect() }])
    }

    #[test]
    fn an_s3_event_notification_names_its_objects_decoded() {
        let body = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put",
            "s3":{"bucket":{"name":"user-events"},"object":{"key":"year%3D2026/month%3D11/day%3D24/fire+hose%2B1.csv","size":5}}}]}"#;
        assert_eq!(read(body), Ok(objects("user-events", &["year=2026/month=11/day=24/fire hose+1.csv"])));
        let removed = body.replace("ObjectCreated:Put", "ObjectRemoved:Delete");
        assert_eq!(read(&removed), Ok(objects("user-events", &["year=2026/month=11/day=24/fire hose+1.csv"])));
        let restored = body.replace("ObjectCreated:Put", "ObjectRestore:Completed");
        assert_eq!(read(&restored), Ok(Message::Nothing));
    }

    #[test]
    fn sns_wrapping_eventbridge_and_the_test_event_are_read() {
        let inner = r#"{"Records":[{"eventName":"ObjectCreated:CompleteMultipartUpload","s3":{"bucket":{"name":"b"},"object":{"key":"a%26b.csv"}}}]}"#;
        let sns = serde_json::json!({"Type": "Notification", "Message": inner}).to_string();
        assert_eq!(read(&sns), Ok(objects("b", &["a&b.csv"])));
        let eventbridge = r#"{"version":"0","detail-type":"Object Created","source":"aws.s3",
            "detail":{"bucket":{"name":"b"},"object":{"key":"year=2026/month=11/day=24/a%20b.csv"}}}"#;
        assert_eq!(read(eventbridge), Ok(objects("b", &["year=2026/month=11/day=24/a%20b.csv", "year=2026/month=11/day=24/a b.csv"])));
        let other = eventbridge.replace("Object Created", "Object Tags Added");
        assert_eq!(read(&other), Ok(Message::Nothing));
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-05T00:00:00Z","Bucket":"b"}"#;
        assert_eq!(read(test), Ok(Message::Nothing));
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        assert!(read("not json").unwrap_err().starts_with("the message is not JSON"));
        assert!(read(r#"{"hello":"world"}"#).unwrap_err().contains("neither"));
        assert!(read(r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{}}]}"#).unwrap_err().contains("no bucket or key"));
    }
}
