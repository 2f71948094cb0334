//! An object of a list page as the API sent it: its JSON text, converted later straight into the
//! compiler's model ([`policy_compiler::object::convert_api_text`]), and the few metadata fields
//! the source reads of every object.
//!
//! A page of 500 pods decoded as `DynamicObject`s is buffered twice (serde's flattening, then a
//! JSON tree per object) and copied once more to be converted; kept as text, each item is one copy
//! of its bytes, decoded once into its `k8s-openapi` type.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ApiResource;
use kube::core::DynamicResourceScope;
use kube::Resource;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// One item of a list page: its JSON text, and its name, namespace, uid and resourceVersion.
#[derive(Clone, Debug)]
pub(super) struct ListItem {
    /// The item as the API sent it (without `apiVersion` and `kind`, which items do not repeat).
    pub(super) text: Box<RawValue>,
    metadata: ObjectMeta,
}

/// The metadata fields read of every item.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Head {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
}

#[derive(Deserialize, Default)]
struct WithHead {
    #[serde(default)]
    metadata: Head,
}

impl<'de> Deserialize<'de> for ListItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Box::<RawValue>::deserialize(deserializer)?;
        // Malformed metadata leaves these empty; the conversion reports what is wrong.
        let head = serde_json::from_str::<WithHead>(text.get())
            .unwrap_or_default()
            .metadata;
        Ok(ListItem {
            text,
            metadata: ObjectMeta {
                name: head.name,
                namespace: head.namespace,
                uid: head.uid,
                resource_version: head.resource_version,
                ..ObjectMeta::default()
            },
        })
    }
}

impl Resource for ListItem {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(resource: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&resource.kind)
    }

    fn group(resource: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&resource.group)
    }

    fn version(resource: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&resource.version)
    }

    fn api_version(resource: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&resource.api_version)
    }

    fn plural(resource: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&resource.plural)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ObjectList;

    #[test]
    fn a_page_keeps_each_item_as_sent_with_its_metadata() {
        let page = r#"{"apiVersion":"v1","kind":"PodList","metadata":{"resourceVersion":"7","continue":"c"},
            "items":[{"metadata":{"name":"p","namespace":"a","uid":"u1","resourceVersion":"5",
                "labels":{"x":"y"}},"spec":{"containers":[]}},
              {"metadata":{"name":7}}]}"#;
        let list: ObjectList<ListItem> = serde_json::from_str(page).expect("a page");
        assert_eq!(list.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(list.metadata.continue_.as_deref(), Some("c"));
        let first = &list.items[0];
        let meta = first.meta();
        assert_eq!(
            (
                meta.name.as_deref(),
                meta.namespace.as_deref(),
                meta.uid.as_deref(),
                meta.resource_version.as_deref()
            ),
            (Some("p"), Some("a"), Some("u1"), Some("5"))
        );
        let text: serde_json::Value = serde_json::from_str(first.text.get()).expect("json");
        assert_eq!(text["metadata"]["labels"]["x"], "y");
        assert_eq!(text["spec"], serde_json::json!({"containers": []}));
        // A name that is not a string: the item is kept, its metadata empty.
        assert_eq!(list.items[1].meta().name, None);
        assert_eq!(list.items[1].text.get(), r#"{"metadata":{"name":7}}"#);
    }
}
