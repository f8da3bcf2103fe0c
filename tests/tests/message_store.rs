//! message-store behaviour a user sees, on both backends: contacts created from captured
//! messages, contact editing with clear errors, tags, filters, visibility and Vietnamese
//! search.

use giao_proto::{
    common::{ChannelUser, ContentType, MessageContent, PageRequest},
    messagestore::{
        AddTagsRequest, AppendInboundRequest, GetContactRequest, GetHistoryRequest, InboundMessage,
        ListContactsRequest, ListConversationsRequest, ListTagsRequest, RemoveTagsRequest,
        SearchRequest, SetConversationOwnerRequest, UpdateContactRequest,
        message_store_service_client::MessageStoreServiceClient, search_hit::Hit,
    },
};
use giao_tests::{
    Authed, Backend, BackendKind, Running, message_store_client, message_store_config,
    start_message_store,
};

const TENANT: &str = "acme";

fn inbound(
    account: &str,
    customer: &str,
    name: &str,
    id: &str,
    text: &str,
) -> AppendInboundRequest {
    AppendInboundRequest {
        message: Some(InboundMessage {
            channel_account_id: account.into(),
            external_message_id: id.into(),
            external_thread_id: customer.into(),
            customer: Some(ChannelUser {
                external_user_id: customer.into(),
                display_name: name.into(),
                phone: "0912 345 678".into(),
                ..Default::default()
            }),
            content: Some(MessageContent {
                r#type: ContentType::Text as i32,
                text: text.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn start(kind: BackendKind) -> (Backend, Running, MessageStoreServiceClient<Authed>) {
    let mut backend = Backend::new(kind).await;
    let store = start_message_store(message_store_config(&mut backend).await).await;
    let admin = message_store_client(&store, TENANT, "admin").await;
    (backend, store, admin)
}

async fn captured_customers_become_contacts_with_codes(kind: BackendKind) {
    let (_backend, store, mut admin) = start(kind).await;
    let first = admin
        .append_inbound(inbound(
            "oa-1",
            "u-lan",
            "Nguyễn Thị Lan",
            "m1",
            "Chào shop",
        ))
        .await
        .expect("stored")
        .into_inner();
    admin
        .append_inbound(inbound(
            "oa-1",
            "u-lan",
            "Nguyễn Thị Lan",
            "m2",
            "Còn hàng không?",
        ))
        .await
        .expect("stored");
    admin
        .append_inbound(inbound(
            "oa-1",
            "u-minh",
            "Trần Minh",
            "m3",
            "Giá bao nhiêu?",
        ))
        .await
        .expect("stored");

    let conversation = admin
        .get_conversation(giao_proto::messagestore::GetConversationRequest {
            conversation_id: first.message.expect("message").conversation_id,
        })
        .await
        .expect("conversation")
        .into_inner();
    let lan = admin
        .get_contact(GetContactRequest {
            contact_id: conversation.contact_id.clone(),
        })
        .await
        .expect("contact")
        .into_inner();
    assert_eq!(lan.customer_code, "KH000001");
    assert_eq!(lan.display_name, "Nguyễn Thị Lan");
    assert_eq!(lan.phones, vec!["+84912345678".to_string()]);
    assert_eq!(lan.care_status, "new");
    assert_eq!(lan.identities.len(), 1);
    assert_eq!(lan.identities[0].external_user_id, "u-lan");

    let contacts = admin
        .list_contacts(ListContactsRequest::default())
        .await
        .expect("lists")
        .into_inner()
        .contacts;
    let mut codes: Vec<_> = contacts.iter().map(|c| c.customer_code.clone()).collect();
    codes.sort();
    assert_eq!(codes, vec!["KH000001".to_string(), "KH000002".to_string()]);

    // Another tenant cannot see the contact.
    let mut other = message_store_client(&store, "other-co", "admin").await;
    let error = other
        .get_contact(GetContactRequest {
            contact_id: conversation.contact_id,
        })
        .await
        .expect_err("other tenant");
    assert_eq!(error.code(), tonic::Code::NotFound);
    store.stop().await.expect("stops");
}

async fn contacts_are_edited_with_clear_errors(kind: BackendKind) {
    let (_backend, store, mut admin) = start(kind).await;
    let stored = admin
        .append_inbound(inbound("oa-1", "u-hoa", "Hoa", "m1", "Xin chào"))
        .await
        .expect("stored")
        .into_inner();
    let conversation_id = stored.message.expect("message").conversation_id;
    let contact_id = admin
        .get_conversation(giao_proto::messagestore::GetConversationRequest {
            conversation_id: conversation_id.clone(),
        })
        .await
        .expect("conversation")
        .into_inner()
        .contact_id;

    let updated = admin
        .update_contact(UpdateContactRequest {
            contact_id: contact_id.clone(),
            update_mask: vec![
                "phones".into(),
                "care_status".into(),
                "lead_source".into(),
                "display_name".into(),
            ],
            display_name: "Lê Thị Hoa".into(),
            phones: vec!["+84 912 345 678".into(), "01628 123 456".into()],
            care_status: "quoted".into(),
            lead_source: "facebook_ads".into(),
            ..Default::default()
        })
        .await
        .expect("updated")
        .into_inner();
    assert_eq!(updated.display_name, "Lê Thị Hoa");
    assert_eq!(updated.care_status, "quoted");
    assert_eq!(updated.lead_source, "facebook_ads");
    let mut phones = updated.phones.clone();
    phones.sort();
    assert_eq!(
        phones,
        vec!["+84328123456".to_string(), "+84912345678".to_string()]
    );

    let error = admin
        .update_contact(UpdateContactRequest {
            contact_id: contact_id.clone(),
            update_mask: vec!["phones".into()],
            phones: vec!["0912345678".into(), "call me".into()],
            ..Default::default()
        })
        .await
        .expect_err("bad phone");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error
            .message()
            .starts_with("phones[1]: invalid phone \"call me\""),
        "{}",
        error.message()
    );
    let error = admin
        .update_contact(UpdateContactRequest {
            contact_id: contact_id.clone(),
            update_mask: vec!["care_status".into()],
            care_status: "married".into(),
            ..Default::default()
        })
        .await
        .expect_err("not a stage");
    assert!(
        error.message().contains("care_status \"married\""),
        "{}",
        error.message()
    );
    let error = admin
        .update_contact(UpdateContactRequest {
            contact_id: contact_id.clone(),
            update_mask: vec!["birthday".into()],
            ..Default::default()
        })
        .await
        .expect_err("unknown field");
    assert!(
        error.message().contains("update_mask"),
        "{}",
        error.message()
    );
    // Nothing of the rejected updates was written.
    let unchanged = admin
        .get_contact(GetContactRequest {
            contact_id: contact_id.clone(),
        })
        .await
        .expect("contact")
        .into_inner();
    assert_eq!(unchanged.care_status, "quoted");
    assert_eq!(unchanged.phones.len(), 2);

    let tagged = admin
        .add_tags(AddTagsRequest {
            contact_id: contact_id.clone(),
            tags: vec!["vip".into(), " sỉ ".into()],
        })
        .await
        .expect("tagged")
        .into_inner();
    let mut tags = tagged.tags.clone();
    tags.sort();
    assert_eq!(tags, vec!["sỉ".to_string(), "vip".to_string()]);
    admin
        .remove_tags(RemoveTagsRequest {
            contact_id: contact_id.clone(),
            tags: vec!["sỉ".into()],
        })
        .await
        .expect("untagged");
    let counts = admin
        .list_tags(ListTagsRequest {})
        .await
        .expect("tags")
        .into_inner()
        .tags;
    assert_eq!(counts.len(), 1);
    assert_eq!((counts[0].tag.as_str(), counts[0].contacts), ("vip", 1));

    for (tag, care_status, expected) in [
        ("vip", "", 1),
        ("retail", "", 0),
        ("", "quoted", 1),
        ("", "won", 0),
    ] {
        let listed = admin
            .list_conversations(ListConversationsRequest {
                tag: tag.into(),
                care_status: care_status.into(),
                ..Default::default()
            })
            .await
            .expect("lists")
            .into_inner()
            .conversations;
        assert_eq!(
            listed.len(),
            expected,
            "tag {tag:?} care status {care_status:?}"
        );
    }
    let waiting = admin
        .list_conversations(ListConversationsRequest {
            waiting_for_reply: true,
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner()
        .conversations;
    assert_eq!(waiting.len(), 1);
    assert!(waiting[0].waiting_for_reply);
    store.stop().await.expect("stops");
}

async fn search_folds_vietnamese_and_respects_visibility(kind: BackendKind) {
    let (_backend, store, mut admin) = start(kind).await;
    let mine = admin
        .append_inbound(inbound(
            "oa-1",
            "u-1",
            "Phạm Văn Đức",
            "m1",
            "Khách hàng cần giao về đường Lê Lợi",
        ))
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message")
        .conversation_id;
    let theirs = admin
        .append_inbound(inbound(
            "oa-1",
            "u-2",
            "Võ Thị Mai",
            "m2",
            "Khách hàng hỏi về bảo hành",
        ))
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message")
        .conversation_id;
    for (conversation, owner) in [(&mine, "u-agent"), (&theirs, "u-other")] {
        admin
            .set_conversation_owner(SetConversationOwnerRequest {
                conversation_ids: vec![conversation.clone()],
                owner_user_id: owner.into(),
                ..Default::default()
            })
            .await
            .expect("owner set");
    }

    let search = |query: &str| SearchRequest {
        query: query.into(),
        page: Some(PageRequest {
            page_size: 20,
            cursor: String::new(),
        }),
        ..Default::default()
    };
    let hits = admin
        .search(search("khach hang"))
        .await
        .expect("search")
        .into_inner()
        .hits;
    let messages: Vec<_> = hits
        .iter()
        .filter_map(|hit| match &hit.hit {
            Some(Hit::Message(message)) => Some(message.conversation_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(messages.len(), 2, "{hits:?}");
    assert!(
        hits.iter()
            .any(|hit| hit.snippet.contains("[[Khách hàng]]")),
        "{hits:?}"
    );

    let hits = admin
        .search(search("DUONG le loi"))
        .await
        .expect("search")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1, "{hits:?}");
    let hits = admin
        .search(search("duc"))
        .await
        .expect("search")
        .into_inner()
        .hits;
    assert!(
        hits.iter().any(
            |hit| matches!(&hit.hit, Some(Hit::Contact(c)) if c.display_name == "Phạm Văn Đức")
        ),
        "{hits:?}"
    );
    // A phone in any form finds the contacts that have it.
    let hits = admin
        .search(search("+84 912 345 678"))
        .await
        .expect("search")
        .into_inner()
        .hits;
    assert_eq!(
        hits.iter()
            .filter(|hit| matches!(hit.hit, Some(Hit::Contact(_))))
            .count(),
        2,
        "{hits:?}"
    );

    // The agent finds only their own conversation, and cannot read the other one.
    let mut agent = giao_proto::messagestore::message_store_service_client::MessageStoreServiceClient::with_interceptor(
        store.channel().await,
        giao_tests::as_user(TENANT, "u-agent", "agent"),
    );
    let hits = agent
        .search(search("khach hang"))
        .await
        .expect("search")
        .into_inner()
        .hits;
    // Every hit, contacts and notes included, is the agent's own.
    let visible: Vec<_> = hits
        .iter()
        .map(|hit| match &hit.hit {
            Some(Hit::Message(message)) => message.conversation_id.clone(),
            other => panic!("only the agent's message matches: {other:?}"),
        })
        .collect();
    assert_eq!(visible, vec![mine.clone()], "{hits:?}");
    let hits = agent
        .search(search("bao hanh"))
        .await
        .expect("search")
        .into_inner()
        .hits;
    assert!(hits.is_empty(), "{hits:?}");
    let error = agent
        .get_history(GetHistoryRequest {
            conversation_id: theirs.clone(),
            ..Default::default()
        })
        .await
        .expect_err("not the agent's");
    assert_eq!(error.code(), tonic::Code::NotFound);
    let listed = agent
        .list_conversations(ListConversationsRequest::default())
        .await
        .expect("lists")
        .into_inner()
        .conversations;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].conversation_id, mine);

    let error = admin.search(search("   ")).await.expect_err("empty");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert_eq!(error.message(), "missing query: required");
    store.stop().await.expect("stops");
}

async fn bad_input_is_rejected_and_nothing_half_written(kind: BackendKind) {
    let (_backend, store, mut admin) = start(kind).await;
    let long = "a".repeat(8_001);
    let error = admin
        .append_inbound(inbound("oa-1", "u-1", "X", "m1", &long))
        .await
        .expect_err("too long");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error.message().starts_with("invalid message.content.text"),
        "{}",
        error.message()
    );

    let error = admin
        .append_inbound_batch(giao_proto::messagestore::AppendInboundBatchRequest {
            messages: vec![],
        })
        .await
        .expect_err("empty batch");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert_eq!(error.message(), "invalid messages: empty batch");
    let mut batch: Vec<InboundMessage> = (0..3)
        .map(|index| {
            inbound("oa-1", "u-1", "X", &format!("b{index}"), "ok")
                .message
                .expect("message")
        })
        .collect();
    batch[2].external_thread_id.clear();
    let error = admin
        .append_inbound_batch(giao_proto::messagestore::AppendInboundBatchRequest {
            messages: batch,
        })
        .await
        .expect_err("one bad item");
    assert_eq!(
        error.message(),
        "missing messages[2].external_thread_id: required"
    );
    let oversized: Vec<InboundMessage> = (0..501)
        .map(|index| {
            inbound("oa-1", "u-1", "X", &format!("o{index}"), "ok")
                .message
                .expect("message")
        })
        .collect();
    let error = admin
        .append_inbound_batch(giao_proto::messagestore::AppendInboundBatchRequest {
            messages: oversized,
        })
        .await
        .expect_err("oversized");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        error.message(),
        "invalid messages: 501 in one batch, at most 500"
    );
    let conversations = admin
        .list_conversations(ListConversationsRequest::default())
        .await
        .expect("lists")
        .into_inner()
        .conversations;
    assert!(
        conversations.is_empty(),
        "a rejected batch wrote something: {conversations:?}"
    );

    let error = admin
        .get_contact(GetContactRequest {
            contact_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(error.code(), tonic::Code::NotFound);
    assert!(
        error.message().starts_with("contact_id "),
        "{}",
        error.message()
    );
    store.stop().await.expect("stops");
}

async fn outbound_delivery_and_recall(kind: BackendKind) {
    use giao_bus::envelope::EventPublisher;
    use giao_proto::{
        common::DeliveryStatus,
        events::{self, envelope::Payload},
        messagestore::{RecordOutboundRequest, UpdateDeliveryRequest},
    };

    let (backend, store, mut admin) = start(kind).await;
    let conversation_id = admin
        .append_inbound(inbound("oa-1", "u-1", "Khách", "m1", "Cho mình hỏi giá"))
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message")
        .conversation_id;
    // An id named twice is one conversation, not an unknown one.
    let set = admin
        .set_conversation_owner(SetConversationOwnerRequest {
            conversation_ids: vec![conversation_id.clone(), conversation_id.clone()],
            owner_user_id: "u-agent".into(),
            team_id: "team-1".into(),
            ..Default::default()
        })
        .await
        .expect("owner set")
        .into_inner();
    assert_eq!(set.updated, 1);
    let mut agent = MessageStoreServiceClient::with_interceptor(
        store.channel().await,
        giao_tests::as_user(TENANT, "u-agent", "agent"),
    );
    let reply = |key: &str, text: &str| RecordOutboundRequest {
        conversation_id: conversation_id.clone(),
        content: Some(MessageContent {
            text: text.into(),
            ..Default::default()
        }),
        idempotency_key: key.into(),
        ..Default::default()
    };
    let first = agent
        .record_outbound(reply("k1", "Dạ 250.000đ ạ"))
        .await
        .expect("recorded")
        .into_inner();
    let again = agent
        .record_outbound(reply("k1", "Dạ 250.000đ ạ"))
        .await
        .expect("retried")
        .into_inner();
    assert!(first.created);
    assert!(!again.created);
    let sent = first.message.expect("message");
    assert_eq!(again.message.expect("message").message_id, sent.message_id);
    assert_eq!(sent.delivery_status, DeliveryStatus::Pending as i32);
    assert_eq!(sent.sender_user_id, "u-agent");

    let conversation = admin
        .get_conversation(giao_proto::messagestore::GetConversationRequest {
            conversation_id: conversation_id.clone(),
        })
        .await
        .expect("conversation")
        .into_inner();
    assert!(!conversation.waiting_for_reply);
    assert_eq!(conversation.unread_count, 0);

    let mut other = MessageStoreServiceClient::with_interceptor(
        store.channel().await,
        giao_tests::as_user(TENANT, "u-other", "agent"),
    );
    let error = other
        .record_outbound(reply("k9", "xin chào"))
        .await
        .expect_err("not theirs");
    assert_eq!(error.code(), tonic::Code::NotFound);
    let mut auditor = message_store_client(&store, TENANT, "auditor").await;
    let error = auditor
        .record_outbound(reply("k8", "xin chào"))
        .await
        .expect_err("read only");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    let error = agent
        .record_outbound(reply("", "xin chào"))
        .await
        .expect_err("no key");
    assert_eq!(error.message(), "missing idempotency_key: required");

    // Delivery moves forward only, by giao id or by the channel's id.
    let status = |response: giao_proto::messagestore::UpdateDeliveryResponse| {
        response.message.expect("message").delivery_status
    };
    let update = admin
        .update_delivery(UpdateDeliveryRequest {
            message_id: sent.message_id.clone(),
            external_message_id: "zalo-out-1".into(),
            status: DeliveryStatus::Sent as i32,
            ..Default::default()
        })
        .await
        .expect("sent")
        .into_inner();
    assert_eq!(status(update), DeliveryStatus::Sent as i32);
    for (reported, expected) in [
        (DeliveryStatus::Seen, DeliveryStatus::Seen),
        (DeliveryStatus::Delivered, DeliveryStatus::Seen),
        (DeliveryStatus::Failed, DeliveryStatus::Seen),
    ] {
        let update = admin
            .update_delivery(UpdateDeliveryRequest {
                channel_account_id: "oa-1".into(),
                external_message_id: "zalo-out-1".into(),
                status: reported as i32,
                ..Default::default()
            })
            .await
            .expect("reported")
            .into_inner();
        assert_eq!(status(update), expected as i32, "after {reported:?}");
    }

    // Reports and recalls also arrive as events from the connector.
    let second = agent
        .record_outbound(reply("k2", "Shop gửi ảnh nhé"))
        .await
        .expect("recorded")
        .into_inner();
    let second_id = second.message.expect("message").message_id;
    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    let publisher = EventPublisher::new(bus, "connector");
    publisher
        .publish(
            TENANT,
            "delivery-1".into(),
            Payload::DeliveryUpdated(events::DeliveryUpdated {
                message_id: second_id.clone(),
                status: DeliveryStatus::Failed as i32,
                failure_reason: "the customer has not written for 7 days".into(),
                failure_code: "-230".into(),
                ..Default::default()
            }),
        )
        .await
        .expect("published");
    publisher
        .publish(
            TENANT,
            "recall-1".into(),
            Payload::MessageRecalled(events::MessageRecalled {
                channel_account_id: "oa-1".into(),
                external_message_id: "m1".into(),
                recalled_by_external_id: "u-1".into(),
                ..Default::default()
            }),
        )
        .await
        .expect("published");

    let mut supervisor = MessageStoreServiceClient::with_interceptor(
        store.channel().await,
        giao_tests::as_user(TENANT, "u-lead", "supervisor.team-1"),
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let history = supervisor
            .get_history(GetHistoryRequest {
                conversation_id: conversation_id.clone(),
                direction: 1,
                ..Default::default()
            })
            .await
            .expect("the team's supervisor reads it")
            .into_inner()
            .messages;
        let recalled = history
            .iter()
            .find(|m| m.external_message_id == "m1")
            .expect("inbound kept");
        let failed = history
            .iter()
            .find(|m| m.message_id == second_id)
            .expect("outbound kept");
        if recalled.recalled && failed.delivery_status == DeliveryStatus::Failed as i32 {
            assert_eq!(
                recalled.content.as_ref().map(|c| c.text.as_str()),
                Some("Cho mình hỏi giá"),
                "the original stays readable"
            );
            assert_eq!(recalled.recalled_by, "u-1");
            assert_eq!(
                failed.failure_reason,
                "the customer has not written for 7 days"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events not applied: {history:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    store.stop().await.expect("stops");
}

async fn notes_merges_reactions_and_export(kind: BackendKind) {
    use giao_bus::envelope::EventPublisher;
    use giao_proto::{
        events::{self, envelope::Payload},
        messagestore::{
            AddNoteRequest, EditNoteRequest, ExportHistoryRequest, GetConversationRequest,
            ListNotesRequest, MergeContactsRequest, export_chunk::Chunk,
            export_history_request::Selector,
        },
    };
    use sha2::Digest;

    let (backend, store, mut admin) = start(kind).await;
    let first = admin
        .append_inbound(inbound("oa-1", "u-1", "Ngọc", "m1", "Em muốn đặt 3 hộp"))
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message");
    let second = admin
        .append_inbound(inbound("zalo-2", "p-9", "", "m2", "Chị Ngọc đây, số mới"))
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message");
    let reader = admin.clone();
    let contact_of = |conversation_id: String| {
        let mut admin = reader.clone();
        async move {
            admin
                .get_conversation(GetConversationRequest { conversation_id })
                .await
                .expect("conversation")
                .into_inner()
                .contact_id
        }
    };
    let target = contact_of(first.conversation_id.clone()).await;
    let source = contact_of(second.conversation_id.clone()).await;

    let note = AddNoteRequest {
        contact_id: target.clone(),
        text: "Khách sỉ, giao thứ Sáu".into(),
        idempotency_key: "n1".into(),
        ..Default::default()
    };
    let added = admin
        .add_note(note.clone())
        .await
        .expect("noted")
        .into_inner();
    let again = admin.add_note(note).await.expect("retried").into_inner();
    assert_eq!(added.note_id, again.note_id);
    let edited = admin
        .edit_note(EditNoteRequest {
            note_id: added.note_id.clone(),
            text: "Khách sỉ, giao thứ Bảy".into(),
        })
        .await
        .expect("edited")
        .into_inner();
    assert_eq!(edited.text, "Khách sỉ, giao thứ Bảy");
    assert_eq!(edited.versions.len(), 1);
    assert_eq!(edited.versions[0].text, "Khách sỉ, giao thứ Sáu");
    let mut stranger = MessageStoreServiceClient::with_interceptor(
        store.channel().await,
        giao_tests::as_user(TENANT, "u-stranger", "agent"),
    );
    let error = stranger
        .list_notes(ListNotesRequest {
            contact_id: target.clone(),
            ..Default::default()
        })
        .await
        .expect_err("not the agent's customer");
    assert_eq!(error.code(), tonic::Code::NotFound);

    admin
        .add_tags(AddTagsRequest {
            contact_id: source.clone(),
            tags: vec!["vip".into()],
        })
        .await
        .expect("tagged");
    admin
        .update_contact(UpdateContactRequest {
            contact_id: source.clone(),
            update_mask: vec!["custom_fields".into()],
            custom_fields: [("city".to_string(), "Huế".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect("updated");
    let merged = admin
        .merge_contacts(MergeContactsRequest {
            target_contact_id: target.clone(),
            source_contact_id: source.clone(),
        })
        .await
        .expect("merged")
        .into_inner();
    assert_eq!(merged.contact_id, target);
    assert_eq!(merged.display_name, "Ngọc");
    assert_eq!(merged.identities.len(), 2);
    assert_eq!(merged.tags, vec!["vip".to_string()]);
    assert_eq!(
        merged.custom_fields.get("city").map(String::as_str),
        Some("Huế")
    );
    assert_eq!(merged.merged_contact_ids, vec![source.clone()]);
    assert_eq!(contact_of(second.conversation_id.clone()).await, target);
    let error = admin
        .merge_contacts(MergeContactsRequest {
            target_contact_id: target.clone(),
            source_contact_id: source.clone(),
        })
        .await
        .expect_err("merged twice");
    assert!(
        error.message().contains("already merged"),
        "{}",
        error.message()
    );

    // A reaction reported by the channel shows on the message.
    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    EventPublisher::new(bus, "connector")
        .publish(
            TENANT,
            "reaction-1".into(),
            Payload::ReactionAdded(events::ReactionAdded {
                channel_account_id: "oa-1".into(),
                external_message_id: "m1".into(),
                reactor_external_id: "u-1".into(),
                reaction: "heart".into(),
                ..Default::default()
            }),
        )
        .await
        .expect("published");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let history = admin
            .get_history(GetHistoryRequest {
                conversation_id: first.conversation_id.clone(),
                ..Default::default()
            })
            .await
            .expect("history")
            .into_inner()
            .messages;
        if history[0]
            .reactions
            .iter()
            .any(|r| r.reaction == "heart" && r.reactor_external_id == "u-1")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reaction never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The export proves itself: the manifest's hash and counts match what was streamed.
    let mut stream = admin
        .export_history(ExportHistoryRequest {
            selector: Some(Selector::ContactId(target.clone())),
            purpose: "handover test".into(),
            ..Default::default()
        })
        .await
        .expect("export starts")
        .into_inner();
    let mut body = Vec::new();
    let mut manifest = None;
    while let Some(chunk) = stream.message().await.expect("chunk") {
        match chunk.chunk {
            Some(Chunk::Jsonl(bytes)) => body.extend_from_slice(&bytes),
            Some(Chunk::Manifest(last)) => manifest = Some(last),
            None => panic!("empty chunk"),
        }
    }
    let manifest = manifest.expect("a manifest ends the export");
    assert_eq!(manifest.sha256, hex::encode(sha2::Sha256::digest(&body)));
    assert_eq!(manifest.bytes, body.len() as u64);
    let lines: Vec<serde_json::Value> = body
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("each line is JSON"))
        .collect();
    let count = |kind: &str| lines.iter().filter(|line| line["type"] == kind).count() as u64;
    assert_eq!((manifest.conversations, count("conversation")), (2, 2));
    assert_eq!((manifest.messages, count("message")), (2, 2));
    assert_eq!((manifest.contacts, count("contact")), (1, 1));
    assert_eq!((manifest.notes, count("note")), (1, 1));
    assert!(lines.iter().any(|line| line["text"] == "Em muốn đặt 3 hộp"));

    let mut agent = message_store_client(&store, TENANT, "agent").await;
    let error = agent
        .export_history(ExportHistoryRequest {
            selector: Some(Selector::ContactId(target.clone())),
            ..Default::default()
        })
        .await
        .expect_err("agents do not export");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    let mut supervisor = message_store_client(&store, TENANT, "supervisor").await;
    let error = supervisor
        .export_history(ExportHistoryRequest {
            selector: Some(Selector::Tenant(true)),
            ..Default::default()
        })
        .await
        .expect_err("the whole tenant is for admins");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    store.stop().await.expect("stops");
}

async fn edits_keep_versions_and_quotes_resolve(kind: BackendKind) {
    use giao_bus::envelope::EventPublisher;
    use giao_proto::events::{self, envelope::Payload};

    let (backend, store, mut admin) = start(kind).await;
    let original = admin
        .append_inbound(inbound("oa-1", "u-1", "An", "m1", "Cho em 2 cái"))
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message");
    let mut reply = inbound("oa-1", "u-1", "An", "m2", "Nhầm, 3 cái ạ");
    if let Some(message) = reply.message.as_mut() {
        message.quote_external_id = "m1".into();
    }
    admin.append_inbound(reply).await.expect("stored");
    // More quotes on the page: of the reply, of m1 again, of a message never captured.
    let mut quoting = Vec::new();
    for (id, quoted) in [("m3", "m2"), ("m4", "m1"), ("m5", "m-never-captured")] {
        let mut message = inbound("oa-1", "u-1", "An", id, "Dạ");
        if let Some(message) = message.message.as_mut() {
            message.quote_external_id = quoted.into();
        }
        quoting.push(
            admin
                .append_inbound(message)
                .await
                .expect("stored")
                .into_inner()
                .message
                .expect("message"),
        );
    }
    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    let publisher = EventPublisher::new(bus, "connector");
    let edit = |external_id: &str, text: &str| {
        Payload::MessageEdited(events::MessageEdited {
            channel_account_id: "oa-1".into(),
            external_message_id: external_id.into(),
            content: Some(MessageContent {
                r#type: ContentType::Text as i32,
                text: text.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    // The same edit reported twice keeps one version; then an edit of the reply, which is
    // applied after both (edits are applied one at a time in order).
    for (event_id, external_id, text) in [
        ("edit-0", "m1", "Cho em 3 cái"),
        ("edit-1", "m1", "Cho em 3 cái"),
        ("edit-last", "m2", "Nhầm, 3 cái nhé"),
    ] {
        publisher
            .publish(TENANT, event_id.into(), edit(external_id, text))
            .await
            .expect("published");
    }
    // Wait for the last edit: then both reports of the first were applied.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let history = loop {
        let history = admin
            .get_history(GetHistoryRequest {
                conversation_id: original.conversation_id.clone(),
                direction: 1,
                ..Default::default()
            })
            .await
            .expect("history")
            .into_inner()
            .messages;
        if history[1].content.as_ref().map(|c| c.text.as_str()) == Some("Nhầm, 3 cái nhé") {
            break history;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "edits never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let edited = &history[0];
    assert_eq!(
        edited.content.as_ref().map(|c| c.text.as_str()),
        Some("Cho em 3 cái")
    );
    assert_eq!(
        edited.versions.len(),
        1,
        "one version however often reported: {edited:?}"
    );
    assert_eq!(
        edited.versions[0].content.as_ref().map(|c| c.text.as_str()),
        Some("Cho em 2 cái")
    );
    assert_eq!(history[1].quote_message_id, original.message_id);
    assert_eq!(history[1].versions.len(), 1);
    let quotes: Vec<(&str, &str, &str)> = history
        .iter()
        .map(|message| {
            (
                message.external_message_id.as_str(),
                message.quote_external_id.as_str(),
                message.quote_message_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        quotes,
        [
            ("m1", "", ""),
            ("m2", "m1", original.message_id.as_str()),
            ("m3", "m2", history[1].message_id.as_str()),
            ("m4", "m1", original.message_id.as_str()),
            ("m5", "m-never-captured", ""),
        ],
        "each quote resolved to the message it names, unknown ones left unresolved"
    );
    assert_eq!(
        quoting
            .iter()
            .map(|m| m.message_id.as_str())
            .collect::<Vec<_>>(),
        [
            history[2].message_id.as_str(),
            history[3].message_id.as_str(),
            history[4].message_id.as_str()
        ]
    );
    // Search sees the new texts.
    let hits = admin
        .search(SearchRequest {
            query: "3 cai".into(),
            scope: giao_proto::messagestore::SearchScope::Messages as i32,
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 2, "{hits:?}");
    store.stop().await.expect("stops");
}

async fn attachments_follow_message_visibility(kind: BackendKind) {
    use giao_proto::messagestore::{
        AttachmentInfo, GetAttachmentRequest, UploadAttachmentRequest,
        upload_attachment_request::Part,
    };

    let (_backend, store, mut admin) = start(kind).await;
    let upload = |parts: Vec<Part>| {
        futures::stream::iter(
            parts
                .into_iter()
                .map(|part| UploadAttachmentRequest { part: Some(part) })
                .collect::<Vec<_>>(),
        )
    };
    let photo: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let stored = admin
        .upload_attachment(upload(vec![
            Part::Info(AttachmentInfo {
                name: "ao-mau.jpg".into(),
                mime_type: "image/jpeg".into(),
                source_url: "https://zalo.example/cdn/ao-mau.jpg".into(),
            }),
            Part::Data(photo[..12_000].to_vec()),
            Part::Data(photo[12_000..].to_vec()),
        ]))
        .await
        .expect("uploaded")
        .into_inner();
    assert!(
        stored.storage_key.starts_with("acme/"),
        "{}",
        stored.storage_key
    );
    assert_eq!(stored.size_bytes, 20_000);

    let mut message = inbound("oa-1", "u-1", "Thu", "m1", "");
    if let Some(inbound) = message.message.as_mut() {
        inbound.content = Some(MessageContent {
            r#type: ContentType::Image as i32,
            attachments: vec![stored.clone()],
            ..Default::default()
        });
    }
    let conversation_id = admin
        .append_inbound(message)
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message")
        .conversation_id;
    admin
        .set_conversation_owner(SetConversationOwnerRequest {
            conversation_ids: vec![conversation_id],
            owner_user_id: "u-agent".into(),
            ..Default::default()
        })
        .await
        .expect("owner");

    let read = |client: MessageStoreServiceClient<Authed>, key: String| async move {
        let mut client = client;
        let mut stream = client
            .get_attachment(GetAttachmentRequest { storage_key: key })
            .await?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await? {
            bytes.extend_from_slice(&chunk.data);
        }
        Ok::<_, tonic::Status>(bytes)
    };
    let owner = MessageStoreServiceClient::with_interceptor(
        store.channel().await,
        giao_tests::as_user(TENANT, "u-agent", "agent"),
    );
    assert_eq!(
        read(owner, stored.storage_key.clone())
            .await
            .expect("the owner reads it"),
        photo
    );
    let stranger = MessageStoreServiceClient::with_interceptor(
        store.channel().await,
        giao_tests::as_user(TENANT, "u-other", "agent"),
    );
    let error = read(stranger, stored.storage_key.clone())
        .await
        .expect_err("not the stranger's");
    assert_eq!(error.code(), tonic::Code::NotFound);
    let other_tenant = message_store_client(&store, "other-co", "admin").await;
    let error = read(other_tenant, stored.storage_key.clone())
        .await
        .expect_err("other tenant");
    assert_eq!(error.code(), tonic::Code::NotFound);

    let error = admin
        .upload_attachment(upload(vec![
            Part::Info(AttachmentInfo {
                name: "big.bin".into(),
                ..Default::default()
            }),
            Part::Data(vec![0u8; 70 * 1024]),
        ]))
        .await
        .expect_err("over the limit");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error
            .message()
            .starts_with("invalid data: attachment larger than"),
        "{}",
        error.message()
    );
    let error = admin
        .upload_attachment(upload(vec![Part::Data(vec![1, 2, 3])]))
        .await
        .expect_err("no info");
    assert!(
        error.message().starts_with("missing info"),
        "{}",
        error.message()
    );
    store.stop().await.expect("stops");
}

/// A batch is stored exactly as the same messages appended one by one: conversations,
/// unread counts, previews, contacts and history match, and repeats (inside the batch,
/// across batches, a whole retried batch) are answered with the stored message.
async fn batches_match_one_by_one_appends(kind: BackendKind) {
    let (_backend, store, mut one_by_one) = start(kind).await;
    let mut batched = message_store_client(&store, "other", "admin").await;
    // Minutes after 2026-11-02 08:00 UTC.
    let at = |minute: i64| prost_types::Timestamp {
        seconds: 1_793_606_400 + minute * 60,
        nanos: 0,
    };
    let mut messages = Vec::new();
    for index in 0..40 {
        let customer = format!("u-{}", index % 4);
        let mut message = inbound(
            "oa-1",
            &customer,
            &format!("Khách {}", index % 4),
            &format!("m{index}"),
            &format!("tin nhắn {index}"),
        )
        .message
        .expect("message");
        message.sent_at = Some(at(index));
        if index % 5 == 4 {
            // A reply quoting the customer's message before it.
            message.quote_external_id = format!("m{}", index - 4);
        }
        if index % 7 == 3 {
            // The owner answered on the phone: resets unread, counts as outbound.
            message.direction = giao_proto::common::Direction::Outbound as i32;
            message.sender_kind = giao_proto::common::SenderKind::AccountOwner as i32;
        }
        messages.push(message);
    }
    // A repeat inside the batch and one of an earlier batch.
    let mut second = messages[20..].to_vec();
    second.push(messages[25].clone());
    second.push(messages[3].clone());

    for message in messages.iter().chain(&second) {
        one_by_one
            .append_inbound(AppendInboundRequest {
                message: Some(message.clone()),
            })
            .await
            .expect("appends");
    }
    let first_results = batched
        .append_inbound_batch(giao_proto::messagestore::AppendInboundBatchRequest {
            messages: messages[..20].to_vec(),
        })
        .await
        .expect("first batch")
        .into_inner()
        .results;
    assert!(first_results.iter().all(|result| result.created));
    // What the batch answered is what is stored.
    let answered = first_results[7].message.clone().expect("message");
    let read = batched
        .get_history(GetHistoryRequest {
            conversation_id: answered.conversation_id.clone(),
            page: Some(PageRequest {
                page_size: 100,
                cursor: String::new(),
            }),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .messages
        .into_iter()
        .find(|message| message.message_id == answered.message_id)
        .expect("stored");
    assert_eq!(read, answered);
    assert_eq!(
        first_results
            .iter()
            .filter(|result| result.conversation_created)
            .count(),
        4,
        "each conversation is opened by exactly one message"
    );
    let second_results = batched
        .append_inbound_batch(giao_proto::messagestore::AppendInboundBatchRequest {
            messages: second.clone(),
        })
        .await
        .expect("second batch")
        .into_inner()
        .results;
    let created: Vec<bool> = second_results.iter().map(|result| result.created).collect();
    assert!(created[..20].iter().all(|&created| created));
    assert_eq!(&created[20..], &[false, false]);
    let id = |result: &giao_proto::messagestore::AppendInboundResponse| {
        result.message.as_ref().expect("message").message_id.clone()
    };
    assert_eq!(id(&second_results[20]), id(&second_results[5]));
    assert_eq!(id(&second_results[21]), id(&first_results[3]));

    // Retrying the whole batch changes nothing.
    let retried = batched
        .append_inbound_batch(giao_proto::messagestore::AppendInboundBatchRequest {
            messages: second,
        })
        .await
        .expect("retry")
        .into_inner()
        .results;
    assert!(retried.iter().all(|result| !result.created));
    assert_eq!(
        retried.iter().map(id).collect::<Vec<_>>(),
        second_results.iter().map(id).collect::<Vec<_>>()
    );

    let view = |conversation: &giao_proto::messagestore::Conversation| {
        (
            conversation.external_thread_id.clone(),
            conversation.unread_count,
            conversation.status,
            conversation.last_inbound_at,
            conversation.last_outbound_at,
            conversation.last_activity_at,
            conversation.last_message_preview.clone(),
            conversation.waiting_for_reply,
            conversation.title.clone(),
        )
    };
    let mut expected = Vec::new();
    let mut actual = Vec::new();
    for (client, out) in [
        (&mut one_by_one, &mut expected),
        (&mut batched, &mut actual),
    ] {
        let conversations = client
            .list_conversations(ListConversationsRequest::default())
            .await
            .expect("lists")
            .into_inner()
            .conversations;
        assert_eq!(conversations.len(), 4);
        for conversation in &conversations {
            let history = client
                .get_history(GetHistoryRequest {
                    conversation_id: conversation.conversation_id.clone(),
                    page: Some(PageRequest {
                        page_size: 100,
                        cursor: String::new(),
                    }),
                    ..Default::default()
                })
                .await
                .expect("history")
                .into_inner()
                .messages;
            let text = |message: &giao_proto::messagestore::Message| {
                message.content.as_ref().expect("content").text.clone()
            };
            // Each text with the text it quotes (ids differ between the two tenants).
            let texts: Vec<(String, Option<String>)> = history
                .iter()
                .map(|message| {
                    let quoted = history
                        .iter()
                        .find(|other| other.message_id == message.quote_message_id)
                        .map(text);
                    (text(message), quoted)
                })
                .collect();
            let contact = client
                .get_contact(GetContactRequest {
                    contact_id: conversation.contact_id.clone(),
                })
                .await
                .expect("contact")
                .into_inner();
            out.push((
                view(conversation),
                texts,
                contact.customer_code,
                contact.display_name,
                contact.phones,
            ));
        }
    }
    let quoting = expected
        .iter()
        .flat_map(|(_, texts, ..)| texts)
        .filter(|(_, quoted)| quoted.is_some())
        .count();
    assert_eq!(quoting, 8, "replies that quote: {expected:?}");
    assert_eq!(actual, expected);
    store.stop().await.expect("stops");
}

/// Batches racing on the same new customers: each customer gets exactly one contact and one
/// conversation, every code is distinct, and every message is stored once.
async fn concurrent_batches_create_each_customer_once(kind: BackendKind) {
    let (_backend, store, _admin) = start(kind).await;
    const CUSTOMERS: usize = 30;
    const BATCHES: usize = 6;
    let mut tasks = Vec::new();
    for batch in 0..BATCHES {
        let mut client = message_store_client(&store, TENANT, "admin").await;
        // Every batch sees every customer, in a different order.
        let messages: Vec<InboundMessage> = (0..CUSTOMERS)
            .map(|i| {
                let rotated = (i + batch * 7) % CUSTOMERS;
                let customer = if batch % 2 == 0 {
                    rotated
                } else {
                    CUSTOMERS - 1 - rotated
                };
                inbound(
                    "oa-1",
                    &format!("u-{customer}"),
                    &format!("Khách {customer}"),
                    &format!("b{batch}-m{i}"),
                    "Chào shop",
                )
                .message
                .expect("message")
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            client
                .append_inbound_batch(giao_proto::messagestore::AppendInboundBatchRequest {
                    messages,
                })
                .await
                .map(|response| response.into_inner().results)
        }));
    }
    let mut stored = 0;
    for task in tasks {
        let results = task.await.expect("joins").expect("batch stored");
        stored += results.iter().filter(|result| result.created).count();
    }
    assert_eq!(stored, CUSTOMERS * BATCHES);

    let mut admin = message_store_client(&store, TENANT, "admin").await;
    let contacts = admin
        .list_contacts(ListContactsRequest {
            page: Some(PageRequest {
                page_size: 100,
                cursor: String::new(),
            }),
            ..Default::default()
        })
        .await
        .expect("lists contacts")
        .into_inner()
        .contacts;
    assert_eq!(contacts.len(), CUSTOMERS, "one contact per customer");
    let codes: std::collections::HashSet<&str> = contacts
        .iter()
        .map(|contact| contact.customer_code.as_str())
        .collect();
    assert_eq!(codes.len(), CUSTOMERS, "codes are distinct");
    let conversations = first_conversations(&mut admin).await;
    assert_eq!(conversations.len(), CUSTOMERS);
    let linked: std::collections::HashSet<&str> = conversations
        .iter()
        .map(|conversation| conversation.contact_id.as_str())
        .collect();
    assert_eq!(
        linked.len(),
        CUSTOMERS,
        "each conversation has its own contact"
    );
    assert!(
        conversations
            .iter()
            .all(|conversation| conversation.unread_count == BATCHES as u32),
        "every batch's message counted once"
    );
    store.stop().await.expect("stops");
}

/// Batches and owner changes racing over the same conversations, each naming them in its own
/// order: every call succeeds (no deadlock between them), every message is counted once and
/// every conversation ends with one of the owners it was given.
async fn batches_and_owner_changes_share_conversations_safely(kind: BackendKind) {
    let (_backend, store, mut admin) = start(kind).await;
    const THREADS: usize = 24;
    const WRITERS: usize = 3;
    const ROUNDS: usize = 8;
    // Created one by one in a scrambled order, so that id order, thread order and the
    // order each writer names them in all differ.
    let mut ids = vec![String::new(); THREADS];
    for step in 0..THREADS {
        let thread = (step * 7 + 5) % THREADS;
        ids[thread] = admin
            .append_inbound(inbound(
                "oa-1",
                &format!("u-{thread:02}"),
                &format!("Khách {thread}"),
                &format!("first-{thread}"),
                "Chào shop",
            ))
            .await
            .expect("stored")
            .into_inner()
            .message
            .expect("message")
            .conversation_id;
    }
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let mut client = message_store_client(&store, TENANT, "admin").await;
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let messages: Vec<InboundMessage> = (0..THREADS)
                    .map(|i| {
                        let thread = (i * 5 + writer * 3 + round) % THREADS;
                        inbound(
                            "oa-1",
                            &format!("u-{thread:02}"),
                            &format!("Khách {thread}"),
                            &format!("w{writer}-r{round}-{thread}"),
                            "Còn hàng không?",
                        )
                        .message
                        .expect("message")
                    })
                    .collect();
                client
                    .append_inbound_batch(giao_proto::messagestore::AppendInboundBatchRequest {
                        messages,
                    })
                    .await
                    .map_err(|status| format!("batch w{writer} r{round}: {status}"))?;
            }
            Ok::<(), String>(())
        }));
    }
    for mover in 0..2 {
        let mut client = message_store_client(&store, TENANT, "admin").await;
        let mut named = ids.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                named.rotate_left(5);
                if mover == 1 {
                    named.reverse();
                }
                client
                    .set_conversation_owner(SetConversationOwnerRequest {
                        conversation_ids: named.clone(),
                        owner_user_id: format!("u-agent-{mover}"),
                        ..Default::default()
                    })
                    .await
                    .map_err(|status| format!("owner change m{mover} r{round}: {status}"))?;
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await.expect("joins").expect("every call succeeds");
    }

    let conversations = first_conversations(&mut admin).await;
    assert_eq!(conversations.len(), THREADS);
    for conversation in &conversations {
        assert_eq!(
            conversation.unread_count as usize,
            1 + WRITERS * ROUNDS,
            "every message of {} counted once",
            conversation.title
        );
        assert!(
            ["u-agent-0", "u-agent-1"].contains(&conversation.owner_user_id.as_str()),
            "{} is owned by {:?}",
            conversation.title,
            conversation.owner_user_id
        );
    }
    store.stop().await.expect("stops");
}

/// An export of many conversations keeps every history under its own conversation line,
/// oldest first, and every note under its own contact, whatever order the customers wrote in.
async fn exports_group_histories_and_notes(kind: BackendKind) {
    use giao_proto::messagestore::{
        AddNoteRequest, ExportHistoryRequest, export_chunk::Chunk, export_history_request::Selector,
    };
    let (_backend, store, mut admin) = start(kind).await;
    // Three customers writing in turns, 7 messages each.
    let mut contacts = Vec::new();
    for index in 0..21 {
        let customer = format!("u-{}", index % 3);
        let mut request = inbound(
            "oa-1",
            &customer,
            &format!("Khách {}", index % 3),
            &format!("m{index}"),
            &format!("tin {index}"),
        );
        if let Some(message) = request.message.as_mut() {
            message.sent_at = Some(prost_types::Timestamp {
                seconds: 1_793_606_400 + index * 60,
                nanos: 0,
            });
        }
        admin.append_inbound(request).await.expect("stored");
    }
    contacts.extend(
        admin
            .list_contacts(ListContactsRequest::default())
            .await
            .expect("contacts")
            .into_inner()
            .contacts
            .into_iter()
            .map(|contact| contact.contact_id),
    );
    assert_eq!(contacts.len(), 3);
    // Notes on the first and last contact only: the middle one has none.
    for (contact, count) in [(&contacts[0], 2), (&contacts[2], 1)] {
        for n in 0..count {
            admin
                .add_note(AddNoteRequest {
                    contact_id: contact.clone(),
                    text: format!("ghi chú {n}"),
                    idempotency_key: format!("{contact}-{n}"),
                    ..Default::default()
                })
                .await
                .expect("noted");
        }
    }
    let mut stream = admin
        .export_history(ExportHistoryRequest {
            selector: Some(Selector::Tenant(true)),
            purpose: "audit".into(),
            ..Default::default()
        })
        .await
        .expect("export starts")
        .into_inner();
    let mut body = Vec::new();
    let mut manifest = None;
    while let Some(chunk) = stream.message().await.expect("chunk") {
        match chunk.chunk {
            Some(Chunk::Jsonl(bytes)) => body.extend_from_slice(&bytes),
            Some(Chunk::Manifest(last)) => manifest = Some(last),
            None => panic!("empty chunk"),
        }
    }
    let manifest = manifest.expect("manifest");
    let lines: Vec<serde_json::Value> = body
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("JSON line"))
        .collect();
    let (mut conversation, mut contact, mut last_sent) = (None, None, String::new());
    let mut per_conversation = std::collections::HashMap::new();
    let mut notes_per_contact = std::collections::HashMap::new();
    for line in &lines {
        match line["type"].as_str().expect("type") {
            "conversation" => {
                conversation = Some(line["conversation_id"].clone());
                last_sent.clear();
            }
            "message" => {
                assert_eq!(Some(&line["conversation_id"]), conversation.as_ref());
                let sent = line["sent_at"].as_str().expect("sent_at").to_string();
                assert!(sent > last_sent, "oldest first within a conversation");
                last_sent = sent;
                *per_conversation
                    .entry(line["conversation_id"].to_string())
                    .or_insert(0) += 1;
            }
            "contact" => contact = Some(line["contact_id"].clone()),
            "note" => {
                assert_eq!(Some(&line["contact_id"]), contact.as_ref());
                *notes_per_contact
                    .entry(line["contact_id"].as_str().expect("id").to_string())
                    .or_insert(0) += 1;
            }
            other => panic!("unexpected line {other}"),
        }
    }
    assert_eq!(
        (
            manifest.conversations,
            manifest.messages,
            manifest.contacts,
            manifest.notes
        ),
        (3, 21, 3, 3)
    );
    assert!(per_conversation.values().all(|count| *count == 7));
    assert_eq!(notes_per_contact.get(&contacts[0]), Some(&2));
    assert_eq!(notes_per_contact.get(&contacts[1]), None);
    assert_eq!(notes_per_contact.get(&contacts[2]), Some(&1));
    store.stop().await.expect("stops");
}

/// The owner closes a conversation with an outcome: one ConversationClosed however often
/// the call is retried; a new customer message reopens it and a second close is a new event.
/// Other agents cannot close it; a missing status is named.
async fn conversations_close_and_reopen(kind: BackendKind) {
    use giao_proto::{
        events::envelope::Payload,
        messagestore::{ConversationStatus, SetConversationStatusRequest},
    };
    let (backend, store, mut admin) = start(kind).await;
    let (events, stop_listening) = collect_events(&backend, "test-closed", "conversation_closed");
    // (event id, conversation, closed by, outcome) of every close announced so far.
    let closed = || {
        events
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|envelope| match &envelope.payload {
                Some(Payload::ConversationClosed(event)) => Some((
                    envelope.event_id.clone(),
                    event.conversation_id.clone(),
                    event.closed_by.clone(),
                    event.outcome.clone(),
                )),
                _ => None,
            })
            .collect::<Vec<_>>()
    };

    let conversation_id = admin
        .append_inbound(inbound("oa-1", "u-1", "Lan", "m1", "Cho em hỏi giá"))
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message")
        .conversation_id;
    admin
        .set_conversation_owner(SetConversationOwnerRequest {
            conversation_ids: vec![conversation_id.clone()],
            owner_user_id: "u-agent".into(),
            ..Default::default()
        })
        .await
        .expect("owner set");
    let close = SetConversationStatusRequest {
        conversation_id: conversation_id.clone(),
        status: ConversationStatus::Closed as i32,
        outcome: "won".into(),
    };
    let mut other = MessageStoreServiceClient::with_interceptor(
        store.channel().await,
        giao_tests::as_user(TENANT, "u-other", "agent"),
    );
    let error = other
        .set_conversation_status(close.clone())
        .await
        .expect_err("not theirs");
    assert_eq!(error.code(), tonic::Code::NotFound);
    let error = admin
        .set_conversation_status(SetConversationStatusRequest {
            conversation_id: conversation_id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("no status");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(error.message().contains("status"), "{}", error.message());

    let mut agent = MessageStoreServiceClient::with_interceptor(
        store.channel().await,
        giao_tests::as_user(TENANT, "u-agent", "agent"),
    );
    let first = agent
        .set_conversation_status(close.clone())
        .await
        .expect("closes")
        .into_inner();
    assert_eq!(first.status, ConversationStatus::Closed as i32);
    agent
        .set_conversation_status(close.clone())
        .await
        .expect("a retry answers the same");

    // The customer writes again: the conversation is open again; closing it is a new event.
    admin
        .append_inbound(inbound("oa-1", "u-1", "Lan", "m2", "Em đặt thêm"))
        .await
        .expect("stored");
    let reopened = admin
        .get_conversation(giao_proto::messagestore::GetConversationRequest {
            conversation_id: conversation_id.clone(),
        })
        .await
        .expect("conversation")
        .into_inner();
    assert_eq!(reopened.status, ConversationStatus::Open as i32);
    agent
        .set_conversation_status(close)
        .await
        .expect("closes again");

    // Closes are announced in order: once a later close of another conversation is seen,
    // a wrongly repeated announcement of the first would have been seen too.
    let later = admin
        .append_inbound(inbound("oa-1", "u-2", "Minh", "m3", "Cảm ơn shop"))
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message")
        .conversation_id;
    admin
        .set_conversation_status(SetConversationStatusRequest {
            conversation_id: later.clone(),
            status: ConversationStatus::Closed as i32,
            outcome: "lost".into(),
        })
        .await
        .expect("closes");
    giao_testkit::wait_until(
        std::time::Duration::from_secs(10),
        "the later close announced",
        || {
            let seen = closed().iter().any(|(_, id, ..)| *id == later);
            async move { seen }
        },
    )
    .await;
    let seen: Vec<_> = closed()
        .into_iter()
        .filter(|(_, id, ..)| *id == conversation_id)
        .collect();
    assert_eq!(seen.len(), 2, "one event per close: {seen:?}");
    assert_ne!(seen[0].0, seen[1].0);
    assert!(
        seen.iter()
            .all(|(_, _, by, outcome)| by == "u-agent" && outcome == "won"),
        "{seen:?}"
    );
    stop_listening.cancel();
    store.stop().await.expect("stops");
}

/// A follower of an OA becomes a contact with the follow source as lead source, before
/// writing anything; a later follow (another source) keeps the first touch, a repeated
/// event changes nothing, and the follower's first message lands on the same contact.
async fn followers_become_contacts_with_their_lead_source(kind: BackendKind) {
    use giao_proto::events::{FollowChanged, envelope::Payload};
    let (backend, store, mut admin) = start(kind).await;
    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    let publisher = giao_bus::envelope::EventPublisher::new(bus, "connector");
    let follow_by = |user: &str, name: &str, source: &str| {
        Payload::FollowChanged(FollowChanged {
            channel_account_id: "oa-1".into(),
            user: Some(ChannelUser {
                external_user_id: user.into(),
                display_name: name.into(),
                ..Default::default()
            }),
            following: true,
            source: source.into(),
            ..Default::default()
        })
    };
    let follow = |source: &str| follow_by("u-follow", "Trần Văn Minh", source);
    publisher
        .publish(TENANT, "follow-1".into(), follow("oa_qr"))
        .await
        .expect("published");
    // The same follow delivered again under another id, then a later follow from an ad.
    publisher
        .publish(TENANT, "follow-1-again".into(), follow("oa_qr"))
        .await
        .expect("published");
    publisher
        .publish(TENANT, "follow-2".into(), follow("ads_123"))
        .await
        .expect("published");
    // Follows are applied one at a time in order: once this later follower is a contact,
    // every follow above has been applied.
    publisher
        .publish(
            TENANT,
            "follow-last".into(),
            follow_by("u-last", "Người theo dõi cuối", "oa_search"),
        )
        .await
        .expect("published");

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let contacts = loop {
        let contacts = admin
            .list_contacts(ListContactsRequest::default())
            .await
            .expect("contacts")
            .into_inner()
            .contacts;
        if contacts
            .iter()
            .any(|contact| contact.lead_source == "oa_search")
        {
            break contacts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the followers never became contacts"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(contacts.len(), 2, "one contact per follower: {contacts:?}");
    let contact = contacts
        .iter()
        .find(|contact| contact.display_name == "Trần Văn Minh")
        .expect("the first follower")
        .clone();
    // The first touch held through the repeated and the later follow.
    assert_eq!(contact.lead_source, "oa_qr");
    let first = admin
        .append_inbound(inbound(
            "oa-1",
            "u-follow",
            "Trần Văn Minh",
            "m1",
            "Chào shop",
        ))
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message");
    let conversation = admin
        .get_conversation(giao_proto::messagestore::GetConversationRequest {
            conversation_id: first.conversation_id,
        })
        .await
        .expect("conversation")
        .into_inner();
    assert_eq!(conversation.contact_id, contact.contact_id);
    let again = admin
        .get_contact(GetContactRequest {
            contact_id: contact.contact_id.clone(),
        })
        .await
        .expect("contact")
        .into_inner();
    assert_eq!(again.lead_source, "oa_qr");
    assert_eq!(again.customer_code, contact.customer_code);
    store.stop().await.expect("stops");
}

/// 2026-11-02 08:00 UTC plus `minute` minutes: past, so every test controls the order.
fn minute(minute: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: 1_793_606_400 + minute * 60,
        nanos: 0,
    }
}

/// An inbound text sent at a chosen minute.
fn inbound_at(
    account: &str,
    customer: &str,
    name: &str,
    id: &str,
    text: &str,
    at: i64,
) -> AppendInboundRequest {
    let mut request = inbound(account, customer, name, id, text);
    if let Some(message) = request.message.as_mut() {
        message.sent_at = Some(minute(at));
    }
    request
}

/// The call failed with NotFound and its message names `field` first.
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str, what: &str) {
    let error = result.expect_err(what);
    assert_eq!(error.code(), tonic::Code::NotFound, "{what}: {error:?}");
    assert!(
        error.message().starts_with(&format!("{field} ")),
        "{what}: the message names {field}: {}",
        error.message()
    );
}

/// The call failed with InvalidArgument and its message starts with `prefix`, which names
/// the field.
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, prefix: &str) {
    let error = result.expect_err(prefix);
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert!(
        error.message().starts_with(prefix),
        "expected {prefix:?}: {}",
        error.message()
    );
}

/// Every chunk of an export: the JSON lines and the manifest.
async fn export_lines(
    client: &mut MessageStoreServiceClient<Authed>,
    selector: giao_proto::messagestore::export_history_request::Selector,
) -> Result<
    (
        Vec<serde_json::Value>,
        giao_proto::messagestore::ExportManifest,
    ),
    tonic::Status,
> {
    use giao_proto::messagestore::{ExportHistoryRequest, export_chunk::Chunk};
    let mut stream = client
        .export_history(ExportHistoryRequest {
            selector: Some(selector),
            purpose: "test".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut body = Vec::new();
    let mut manifest = None;
    while let Some(chunk) = stream.message().await? {
        match chunk.chunk {
            Some(Chunk::Jsonl(bytes)) => body.extend_from_slice(&bytes),
            Some(Chunk::Manifest(last)) => manifest = Some(last),
            None => panic!("empty chunk"),
        }
    }
    let lines = body
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("JSON line"))
        .collect();
    Ok((lines, manifest.expect("a manifest ends the export")))
}

/// The first hundred conversations the caller sees, newest activity first.
async fn first_conversations(
    client: &mut MessageStoreServiceClient<Authed>,
) -> Vec<giao_proto::messagestore::Conversation> {
    client
        .list_conversations(ListConversationsRequest {
            page: Some(PageRequest {
                page_size: 100,
                cursor: String::new(),
            }),
            ..Default::default()
        })
        .await
        .expect("lists conversations")
        .into_inner()
        .conversations
}

async fn contact_of(
    client: &mut MessageStoreServiceClient<Authed>,
    conversation_id: &str,
) -> String {
    client
        .get_conversation(giao_proto::messagestore::GetConversationRequest {
            conversation_id: conversation_id.into(),
        })
        .await
        .expect("conversation")
        .into_inner()
        .contact_id
}

async fn add_note(
    client: &mut MessageStoreServiceClient<Authed>,
    contact_id: &str,
    text: &str,
) -> giao_proto::messagestore::Note {
    client
        .add_note(giao_proto::messagestore::AddNoteRequest {
            contact_id: contact_id.into(),
            text: text.into(),
            ..Default::default()
        })
        .await
        .expect("noted")
        .into_inner()
}

fn client_as(
    store_channel: &tonic::transport::Channel,
    user: &str,
    role: &str,
) -> MessageStoreServiceClient<Authed> {
    MessageStoreServiceClient::with_interceptor(
        store_channel.clone(),
        giao_tests::as_user(TENANT, user, role),
    )
}

fn search_page(query: &str, page_size: u32, cursor: &str) -> SearchRequest {
    SearchRequest {
        query: query.into(),
        page: Some(PageRequest {
            page_size,
            cursor: cursor.into(),
        }),
        ..Default::default()
    }
}

/// Every read and write of the contact answers NotFound naming `contact_id`.
async fn assert_contact_hidden(
    client: &mut MessageStoreServiceClient<Authed>,
    contact_id: &str,
    who: &str,
) {
    use giao_proto::messagestore::{AddNoteRequest, ListNotesRequest};
    let contact_id = contact_id.to_string();
    let results = [
        (
            "GetContact",
            client
                .get_contact(GetContactRequest {
                    contact_id: contact_id.clone(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "UpdateContact",
            client
                .update_contact(UpdateContactRequest {
                    contact_id: contact_id.clone(),
                    update_mask: vec!["display_name".into(), "care_status".into()],
                    display_name: "hijacked".into(),
                    care_status: "won".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "AddTags",
            client
                .add_tags(AddTagsRequest {
                    contact_id: contact_id.clone(),
                    tags: vec!["hijacked".into()],
                })
                .await
                .map(|_| ()),
        ),
        (
            "AddNote",
            client
                .add_note(AddNoteRequest {
                    contact_id: contact_id.clone(),
                    text: "hijacked".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "ListNotes",
            client
                .list_notes(ListNotesRequest {
                    contact_id: contact_id.clone(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
    ];
    for (rpc, result) in results {
        assert_not_found(result, "contact_id", &format!("{rpc} {who}"));
    }
}

/// Every read and write of the conversation answers NotFound naming `conversation_id`.
async fn assert_conversation_hidden(
    client: &mut MessageStoreServiceClient<Authed>,
    conversation_id: &str,
    who: &str,
) {
    use giao_proto::messagestore::{
        ConversationStatus, GetConversationRequest, RecordOutboundRequest,
        SetConversationStatusRequest,
    };
    let conversation_id = conversation_id.to_string();
    let results = [
        (
            "GetConversation",
            client
                .get_conversation(GetConversationRequest {
                    conversation_id: conversation_id.clone(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "GetHistory",
            client
                .get_history(GetHistoryRequest {
                    conversation_id: conversation_id.clone(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "Search in the conversation",
            client
                .search(SearchRequest {
                    conversation_id: conversation_id.clone(),
                    ..search_page("a", 10, "")
                })
                .await
                .map(|_| ()),
        ),
        (
            "RecordOutbound",
            client
                .record_outbound(RecordOutboundRequest {
                    conversation_id: conversation_id.clone(),
                    content: Some(MessageContent {
                        text: "hijacked".into(),
                        ..Default::default()
                    }),
                    idempotency_key: "hijack-1".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "SetConversationStatus",
            client
                .set_conversation_status(SetConversationStatusRequest {
                    conversation_id: conversation_id.clone(),
                    status: ConversationStatus::Closed as i32,
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
    ];
    for (rpc, result) in results {
        assert_not_found(result, "conversation_id", &format!("{rpc} {who}"));
    }
}

/// A delivery report by giao id or by the channel's id on oa-1 answers NotFound naming the
/// field that carried the id.
async fn assert_delivery_hidden(
    client: &mut MessageStoreServiceClient<Authed>,
    message_id: &str,
    external_message_id: &str,
) {
    use giao_proto::messagestore::UpdateDeliveryRequest;
    let status = giao_proto::common::DeliveryStatus::Failed as i32;
    let by_id = UpdateDeliveryRequest {
        message_id: message_id.into(),
        status,
        ..Default::default()
    };
    let by_channel = UpdateDeliveryRequest {
        channel_account_id: "oa-1".into(),
        external_message_id: external_message_id.into(),
        status,
        ..Default::default()
    };
    for (request, field) in [(by_id, "message_id"), (by_channel, "external_message_id")] {
        assert_not_found(
            client.update_delivery(request).await,
            field,
            "UpdateDelivery",
        );
    }
}

/// Another tenant's ids answer NotFound on every RPC that takes one, naming the field, and
/// change nothing; its searches and exports find nothing of this tenant.
async fn other_tenants_ids_answer_not_found(kind: BackendKind) {
    use giao_proto::messagestore::{
        AttachmentInfo, EditNoteRequest, GetAttachmentRequest, GetConversationRequest,
        ListNotesRequest, MergeContactsRequest, UploadAttachmentRequest,
        export_history_request::Selector, upload_attachment_request::Part,
    };
    let (_backend, store, mut admin) = start(kind).await;
    let photo = admin
        .upload_attachment(futures::stream::iter(vec![
            UploadAttachmentRequest {
                part: Some(Part::Info(AttachmentInfo {
                    name: "ao.jpg".into(),
                    mime_type: "image/jpeg".into(),
                    ..Default::default()
                })),
            },
            UploadAttachmentRequest {
                part: Some(Part::Data(vec![7; 1_000])),
            },
        ]))
        .await
        .expect("uploaded")
        .into_inner();
    let mut request = inbound("oa-1", "u-lan", "Chị Lan", "m1", "");
    if let Some(message) = request.message.as_mut() {
        message.content = Some(MessageContent {
            r#type: ContentType::Image as i32,
            attachments: vec![photo.clone()],
            ..Default::default()
        });
    }
    let stored = admin
        .append_inbound(request)
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message");
    let conversation_id = stored.conversation_id.clone();
    let contact_id = contact_of(&mut admin, &conversation_id).await;
    let minh_conversation = admin
        .append_inbound(inbound(
            "oa-1",
            "u-minh",
            "Anh Minh",
            "m2",
            "Áo còn size M không",
        ))
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message")
        .conversation_id;
    let other_contact = contact_of(&mut admin, &minh_conversation).await;
    let note = add_note(&mut admin, &contact_id, "Khách quen, thích áo màu xanh").await;

    let mut theirs = message_store_client(&store, "other-co", "admin").await;
    assert_conversation_hidden(&mut theirs, &conversation_id, "from another tenant").await;
    assert_contact_hidden(&mut theirs, &contact_id, "from another tenant").await;
    assert_not_found(
        theirs
            .edit_note(EditNoteRequest {
                note_id: note.note_id.clone(),
                text: "x".into(),
            })
            .await,
        "note_id",
        "EditNote",
    );
    assert_not_found(
        theirs
            .merge_contacts(MergeContactsRequest {
                target_contact_id: contact_id.clone(),
                source_contact_id: other_contact.clone(),
            })
            .await,
        "target_contact_id",
        "MergeContacts",
    );
    assert_delivery_hidden(&mut theirs, &stored.message_id, "m1").await;
    let read = async {
        let mut stream = theirs
            .get_attachment(GetAttachmentRequest {
                storage_key: photo.storage_key.clone(),
            })
            .await?
            .into_inner();
        while stream.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    };
    assert_not_found(read.await, "storage_key", "GetAttachment");
    assert_not_found(
        export_lines(&mut theirs, Selector::ContactId(contact_id.clone())).await,
        "contact_id",
        "ExportHistory by contact",
    );
    // Searching and exporting their own tenant finds nothing of this one.
    let hits = theirs
        .search(search_page("ao", 50, ""))
        .await
        .expect("their search")
        .into_inner()
        .hits;
    assert!(hits.is_empty(), "{hits:?}");
    let ours = admin
        .search(search_page("ao", 50, ""))
        .await
        .expect("our search")
        .into_inner()
        .hits;
    assert!(!ours.is_empty(), "the same search finds it here");
    for selector in [
        Selector::ChannelAccountId("oa-1".into()),
        Selector::Tenant(true),
    ] {
        let (lines, manifest) = export_lines(&mut theirs, selector.clone())
            .await
            .expect("their export");
        assert!(lines.is_empty(), "{selector:?}: {lines:?}");
        assert_eq!(
            (manifest.conversations, manifest.messages, manifest.contacts),
            (0, 0, 0)
        );
    }

    // Nothing changed here.
    let contact = admin
        .get_contact(GetContactRequest {
            contact_id: contact_id.clone(),
        })
        .await
        .expect("contact")
        .into_inner();
    assert_eq!(
        (contact.display_name.as_str(), contact.care_status.as_str()),
        ("Chị Lan", "new")
    );
    assert!(contact.tags.is_empty());
    assert!(contact.merged_contact_ids.is_empty());
    let notes = admin
        .list_notes(ListNotesRequest {
            contact_id,
            ..Default::default()
        })
        .await
        .expect("notes")
        .into_inner()
        .notes;
    assert_eq!(notes.len(), 1);
    assert!(notes[0].versions.is_empty());
    let history = admin
        .get_history(GetHistoryRequest {
            conversation_id: conversation_id.clone(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .messages;
    assert_eq!(history.len(), 1);
    assert_eq!(
        history[0].delivery_status,
        giao_proto::common::DeliveryStatus::Delivered as i32
    );
    let conversation = admin
        .get_conversation(GetConversationRequest { conversation_id })
        .await
        .expect("conversation")
        .into_inner();
    assert_eq!(
        conversation.status,
        giao_proto::messagestore::ConversationStatus::Open as i32
    );
    store.stop().await.expect("stops");
}

/// Agents see their own customers only (conversations, contacts and notes, in reads, writes
/// and search); supervisors their teams' conversations, in lists, reads, search and exports.
async fn agents_and_supervisors_see_only_their_share(kind: BackendKind) {
    use giao_proto::messagestore::{ListNotesRequest, export_history_request::Selector};
    let (_backend, store, mut admin) = start(kind).await;
    let channel = store.channel().await;
    // Lan is u-agent's customer in team-1; Mai is u-other's in team-2.
    let mut ids = Vec::new();
    for (customer, name, id, text, owner, team) in [
        (
            "u-lan",
            "Nguyễn Thị Lan",
            "m1",
            "Khách hàng hỏi giao Đà Nẵng",
            "u-agent",
            "team-1",
        ),
        (
            "u-mai",
            "Võ Thị Mai",
            "m2",
            "Khách hàng cần giao Đà Nẵng gấp",
            "u-other",
            "team-2",
        ),
    ] {
        let conversation_id = admin
            .append_inbound(inbound("oa-1", customer, name, id, text))
            .await
            .expect("stored")
            .into_inner()
            .message
            .expect("message")
            .conversation_id;
        admin
            .set_conversation_owner(SetConversationOwnerRequest {
                conversation_ids: vec![conversation_id.clone()],
                owner_user_id: owner.into(),
                team_id: team.into(),
                ..Default::default()
            })
            .await
            .expect("owner set");
        let contact_id = contact_of(&mut admin, &conversation_id).await;
        add_note(
            &mut admin,
            &contact_id,
            &format!("{name}: ưu tiên kho Đà Nẵng"),
        )
        .await;
        ids.push((conversation_id, contact_id));
    }
    let (lan_conversation, lan) = ids[0].clone();
    let (mai_conversation, mai) = ids[1].clone();

    // The admin's search sees both customers' notes, so the agent's narrower view is a filter.
    let kinds = |hits: &[giao_proto::messagestore::SearchHit]| {
        let mut seen: Vec<(&'static str, String)> = hits
            .iter()
            .map(|hit| match &hit.hit {
                Some(Hit::Message(message)) => ("message", message.conversation_id.clone()),
                Some(Hit::Contact(contact)) => ("contact", contact.contact_id.clone()),
                Some(Hit::Note(note)) => ("note", note.contact_id.clone()),
                None => ("none", String::new()),
            })
            .collect();
        seen.sort();
        seen
    };
    let search = |client: &MessageStoreServiceClient<Authed>, scope: i32, query: &str| {
        let mut client = client.clone();
        let request = SearchRequest {
            scope,
            ..search_page(query, 50, "")
        };
        async move {
            client
                .search(request)
                .await
                .expect("search")
                .into_inner()
                .hits
        }
    };
    let mut expected_all = vec![
        ("message", lan_conversation.clone()),
        ("message", mai_conversation.clone()),
        ("note", lan.clone()),
        ("note", mai.clone()),
    ];
    expected_all.sort();
    assert_eq!(kinds(&search(&admin, 0, "da nang").await), expected_all);

    let mut agent = client_as(&channel, "u-agent", "agent");
    let mut expected_own = vec![("message", lan_conversation.clone()), ("note", lan.clone())];
    expected_own.sort();
    assert_eq!(kinds(&search(&agent, 0, "da nang").await), expected_own);
    // Contacts by name or phone: the agent's customer only, where the admin finds more.
    let contacts = giao_proto::messagestore::SearchScope::Contacts as i32;
    for (query, expected) in [
        ("thi", vec![("contact", lan.clone())]),
        ("mai", vec![]),
        ("0912345678", vec![("contact", lan.clone())]),
    ] {
        assert_eq!(
            kinds(&search(&agent, contacts, query).await),
            expected,
            "agent searching {query:?}"
        );
        let all = search(&admin, contacts, query).await;
        assert!(
            all.len() > expected.len(),
            "admin searching {query:?}: {all:?}"
        );
    }
    // Another agent's customer and conversation are NotFound, for reading and writing.
    assert_contact_hidden(&mut agent, &mai, "as another agent").await;
    assert_conversation_hidden(&mut agent, &mai_conversation, "as another agent").await;
    let untouched = admin
        .get_contact(GetContactRequest {
            contact_id: mai.clone(),
        })
        .await
        .expect("contact")
        .into_inner();
    assert_eq!(
        (
            untouched.display_name.as_str(),
            untouched.care_status.as_str()
        ),
        ("Võ Thị Mai", "new")
    );
    assert!(untouched.tags.is_empty());
    let notes = admin
        .list_notes(ListNotesRequest {
            contact_id: mai.clone(),
            ..Default::default()
        })
        .await
        .expect("notes")
        .into_inner()
        .notes;
    assert_eq!(notes.len(), 1);
    // Their own customer is writable.
    agent
        .add_tags(AddTagsRequest {
            contact_id: lan.clone(),
            tags: vec!["mine".into()],
        })
        .await
        .expect("own customer");

    // team-1's supervisor: team-1 only.
    let mut supervisor = client_as(&channel, "u-lead", "supervisor.team-1");
    assert_conversation_hidden(
        &mut supervisor,
        &mai_conversation,
        "as another team's supervisor",
    )
    .await;
    let listed: Vec<String> = supervisor
        .list_conversations(ListConversationsRequest::default())
        .await
        .expect("lists")
        .into_inner()
        .conversations
        .into_iter()
        .map(|conversation| conversation.conversation_id)
        .collect();
    assert_eq!(listed, vec![lan_conversation.clone()]);
    assert_eq!(
        kinds(&search(&supervisor, 0, "da nang").await),
        expected_own
    );
    supervisor
        .get_history(GetHistoryRequest {
            conversation_id: lan_conversation.clone(),
            ..Default::default()
        })
        .await
        .expect("the team's conversation");

    // Exports by owner or channel account carry only the supervisor's teams' conversations.
    for (selector, expected) in [
        (Selector::OwnerUserId("u-other".into()), vec![]),
        (
            Selector::OwnerUserId("u-agent".into()),
            vec![lan_conversation.clone()],
        ),
        (
            Selector::ChannelAccountId("oa-1".into()),
            vec![lan_conversation.clone()],
        ),
    ] {
        let (lines, manifest) = export_lines(&mut supervisor, selector.clone())
            .await
            .expect("export");
        let conversations: Vec<String> = lines
            .iter()
            .filter(|line| line["type"] == "conversation")
            .map(|line| line["conversation_id"].as_str().expect("id").to_string())
            .collect();
        assert_eq!(conversations, expected, "{selector:?}");
        assert_eq!(manifest.conversations, expected.len() as u64);
        let contacts: Vec<&str> = lines
            .iter()
            .filter(|line| line["type"] == "contact" || line["type"] == "note")
            .map(|line| line["contact_id"].as_str().expect("contact id"))
            .collect();
        assert!(
            contacts.iter().all(|contact| *contact == lan),
            "{selector:?}: {contacts:?}"
        );
        assert!(
            lines
                .iter()
                .all(|line| line["text"] != "Khách hàng cần giao Đà Nẵng gấp"),
            "{selector:?}"
        );
    }
    // The admin's export of the account has both, so the filter above is the supervisor's.
    let (_, manifest) = export_lines(&mut admin, Selector::ChannelAccountId("oa-1".into()))
        .await
        .expect("export");
    assert_eq!(manifest.conversations, 2);
    store.stop().await.expect("stops");
}

/// Unknown ids are NotFound naming the field; malformed ids are InvalidArgument naming it.
async fn unknown_ids_name_their_field(kind: BackendKind) {
    use giao_proto::messagestore::{
        AddNoteRequest, EditNoteRequest, GetConversationRequest, ListNotesRequest,
        RecordOutboundRequest, UpdateDeliveryRequest,
    };
    let (_backend, store, mut admin) = start(kind).await;
    let conversation_id = admin
        .append_inbound(inbound("oa-1", "u-1", "Lan", "m1", "Chào shop"))
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message")
        .conversation_id;
    let contact_id = contact_of(&mut admin, &conversation_id).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_conversation_hidden(&mut admin, &unknown, "of an unknown id").await;
    assert_contact_hidden(&mut admin, &unknown, "of an unknown id").await;
    assert_delivery_hidden(&mut admin, &unknown, "never-sent").await;
    assert_not_found(
        admin
            .add_note(AddNoteRequest {
                contact_id: contact_id.clone(),
                conversation_id: unknown.clone(),
                text: "ghi chú".into(),
                ..Default::default()
            })
            .await,
        "conversation_id",
        "AddNote in an unknown conversation",
    );
    assert_not_found(
        admin
            .edit_note(EditNoteRequest {
                note_id: unknown.clone(),
                text: "sửa".into(),
            })
            .await,
        "note_id",
        "EditNote",
    );
    assert_not_found(
        admin
            .record_outbound(RecordOutboundRequest {
                conversation_id: conversation_id.clone(),
                quote_message_id: unknown.clone(),
                content: Some(MessageContent {
                    text: "Dạ".into(),
                    ..Default::default()
                }),
                idempotency_key: "k1".into(),
            })
            .await,
        "quote_message_id",
        "RecordOutbound quoting an unknown message",
    );
    assert_not_found(
        admin
            .set_conversation_owner(SetConversationOwnerRequest {
                conversation_ids: vec![conversation_id.clone(), unknown.clone()],
                owner_user_id: "u-agent".into(),
                ..Default::default()
            })
            .await,
        "conversation_ids[1]",
        "SetConversationOwner with one unknown id",
    );
    assert_not_found(
        admin
            .set_conversation_owner(SetConversationOwnerRequest {
                conversation_ids: vec![unknown.clone(), conversation_id.clone()],
                owner_user_id: "u-agent".into(),
                with_contacts: true,
                ..Default::default()
            })
            .await,
        "conversation_ids[0]",
        "SetConversationOwner of conversations and customers with one unknown id",
    );
    let customer = admin
        .get_contact(GetContactRequest {
            contact_id: contact_id.clone(),
        })
        .await
        .expect("contact")
        .into_inner();
    assert_eq!(customer.owner_user_id, "", "the customer did not move");
    // Nothing of the refused calls was written.
    let conversation = admin
        .get_conversation(GetConversationRequest {
            conversation_id: conversation_id.clone(),
        })
        .await
        .expect("conversation")
        .into_inner();
    assert_eq!(conversation.owner_user_id, "");
    let notes = admin
        .list_notes(ListNotesRequest {
            contact_id: contact_id.clone(),
            ..Default::default()
        })
        .await
        .expect("notes")
        .into_inner()
        .notes;
    assert!(notes.is_empty(), "{notes:?}");
    let history = admin
        .get_history(GetHistoryRequest {
            conversation_id: conversation_id.clone(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .messages;
    assert_eq!(history.len(), 1);

    // Malformed or missing ids are bad input, named.
    for (result, expected) in [
        (
            admin
                .get_conversation(GetConversationRequest {
                    conversation_id: "not-an-id".into(),
                })
                .await
                .map(|_| ()),
            "invalid conversation_id \"not-an-id\"",
        ),
        (
            admin
                .get_history(GetHistoryRequest::default())
                .await
                .map(|_| ()),
            "missing conversation_id",
        ),
        (
            admin
                .update_delivery(UpdateDeliveryRequest {
                    message_id: "42".into(),
                    status: giao_proto::common::DeliveryStatus::Seen as i32,
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            "invalid message_id \"42\"",
        ),
        (
            admin
                .add_note(AddNoteRequest {
                    text: "ghi chú".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            "missing contact_id",
        ),
    ] {
        assert_invalid(result, expected);
    }
    store.stop().await.expect("stops");
}

/// History pages backward and forward with no message skipped or repeated, even when messages
/// share a second; ListConversations filters each field, newest activity first, and pages.
async fn history_and_lists_page_without_gaps(kind: BackendKind) {
    use giao_proto::messagestore::{ConversationStatus, SetConversationStatusRequest};
    let (_backend, store, mut admin) = start(kind).await;
    // 23 messages; pairs share the same minute, so paging must order by id within a time.
    let mut stored = Vec::new();
    for index in 0..23 {
        let message = admin
            .append_inbound(inbound_at(
                "oa-1",
                "u-long",
                "Khách",
                &format!("h{index}"),
                &format!("tin {index}"),
                index / 2,
            ))
            .await
            .expect("stored")
            .into_inner()
            .message
            .expect("message");
        stored.push(message);
    }
    let conversation_id = stored[0].conversation_id.clone();
    let read_all = |direction: i32, page_size: u32| {
        let mut client = admin.clone();
        let conversation_id = conversation_id.clone();
        async move {
            let (mut ids, mut pages, mut cursor) = (Vec::new(), 0, String::new());
            loop {
                let response = client
                    .get_history(GetHistoryRequest {
                        conversation_id: conversation_id.clone(),
                        direction,
                        page: Some(PageRequest {
                            page_size,
                            cursor: cursor.clone(),
                        }),
                    })
                    .await
                    .expect("history")
                    .into_inner();
                pages += 1;
                assert!(response.messages.len() <= page_size as usize);
                ids.extend(
                    response
                        .messages
                        .into_iter()
                        .map(|message| message.message_id),
                );
                cursor = response.page.expect("page").next_cursor;
                if cursor.is_empty() {
                    return (ids, pages);
                }
                assert!(pages < 50, "paging never ends");
            }
        }
    };
    let by_time = |ids: &[String]| {
        ids.iter()
            .map(|id| {
                let message = stored
                    .iter()
                    .find(|m| &m.message_id == id)
                    .expect("a stored message");
                let at = message.sent_at.as_ref().expect("sent_at");
                (at.seconds, message.external_message_id.clone())
            })
            .collect::<Vec<_>>()
    };
    let (backward, pages) = read_all(0, 5).await;
    assert_eq!(pages, 5, "23 messages in pages of 5");
    let (forward, _) = read_all(1, 4).await;
    let mut reversed = forward.clone();
    reversed.reverse();
    assert_eq!(backward, reversed, "both directions see the same messages");
    let unique: std::collections::HashSet<&String> = backward.iter().collect();
    assert_eq!(unique.len(), 23, "none repeated");
    assert_eq!(backward.len(), 23, "none skipped");
    let times: Vec<i64> = by_time(&forward).into_iter().map(|(at, _)| at).collect();
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "oldest first forward"
    );
    assert_eq!(by_time(&backward)[0].1, "h22", "newest first backward");

    // Conversations with distinct accounts, owners, teams, statuses, lead sources and times.
    let conversation = |account: &str, customer: &str, at: i64| {
        let mut client = admin.clone();
        let request = inbound_at(
            account,
            customer,
            customer,
            &format!("{customer}-1"),
            "Chào shop",
            at,
        );
        async move {
            client
                .append_inbound(request)
                .await
                .expect("stored")
                .into_inner()
                .message
                .expect("message")
                .conversation_id
        }
    };
    let a = conversation("oa-1", "u-a", 100).await;
    let b = conversation("oa-2", "u-b", 300).await;
    let c = conversation("oa-1", "u-c", 200).await;
    for (id, owner, team) in [
        (&a, "u-1", "team-1"),
        (&b, "u-2", "team-2"),
        (&c, "u-1", "team-1"),
    ] {
        admin
            .set_conversation_owner(SetConversationOwnerRequest {
                conversation_ids: vec![id.clone()],
                owner_user_id: owner.into(),
                team_id: team.into(),
                ..Default::default()
            })
            .await
            .expect("owner set");
    }
    admin
        .set_conversation_status(SetConversationStatusRequest {
            conversation_id: b.clone(),
            status: ConversationStatus::Closed as i32,
            outcome: "lost".into(),
        })
        .await
        .expect("closed");
    let contact_a = contact_of(&mut admin, &a).await;
    admin
        .update_contact(UpdateContactRequest {
            contact_id: contact_a,
            update_mask: vec!["lead_source".into()],
            lead_source: "facebook_ads".into(),
            ..Default::default()
        })
        .await
        .expect("lead source");

    let list = |request: ListConversationsRequest| {
        let mut client = admin.clone();
        async move {
            client
                .list_conversations(request)
                .await
                .expect("lists")
                .into_inner()
                .conversations
                .into_iter()
                .map(|conversation| conversation.conversation_id)
                .collect::<Vec<_>>()
        }
    };
    // Newest activity first: b (minute 300), c (200), a (100), then the long one (0 to 11).
    let all = list(ListConversationsRequest::default()).await;
    assert_eq!(
        all,
        vec![b.clone(), c.clone(), a.clone(), conversation_id.clone()]
    );
    for (label, request, expected) in [
        (
            "status closed",
            ListConversationsRequest {
                status: ConversationStatus::Closed as i32,
                ..Default::default()
            },
            vec![b.clone()],
        ),
        (
            "status open",
            ListConversationsRequest {
                status: ConversationStatus::Open as i32,
                ..Default::default()
            },
            vec![c.clone(), a.clone(), conversation_id.clone()],
        ),
        (
            "team-1",
            ListConversationsRequest {
                team_id: "team-1".into(),
                ..Default::default()
            },
            vec![c.clone(), a.clone()],
        ),
        (
            "owner u-2",
            ListConversationsRequest {
                owner_user_id: "u-2".into(),
                ..Default::default()
            },
            vec![b.clone()],
        ),
        (
            "lead source",
            ListConversationsRequest {
                lead_source: "facebook_ads".into(),
                ..Default::default()
            },
            vec![a.clone()],
        ),
        (
            "channel account oa-1",
            ListConversationsRequest {
                channel_account_id: "oa-1".into(),
                ..Default::default()
            },
            vec![c.clone(), a.clone(), conversation_id.clone()],
        ),
        (
            "updated since minute 200",
            ListConversationsRequest {
                updated_since: Some(minute(200)),
                ..Default::default()
            },
            vec![b.clone(), c.clone()],
        ),
        (
            "unassigned",
            ListConversationsRequest {
                unassigned: true,
                ..Default::default()
            },
            vec![conversation_id.clone()],
        ),
        (
            "team-1 and updated since minute 150",
            ListConversationsRequest {
                team_id: "team-1".into(),
                updated_since: Some(minute(150)),
                ..Default::default()
            },
            vec![c.clone()],
        ),
    ] {
        assert_eq!(list(request).await, expected, "{label}");
    }
    // One at a time through the cursor: the same order, nothing twice.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let response = admin
            .list_conversations(ListConversationsRequest {
                page: Some(PageRequest {
                    page_size: 1,
                    cursor: cursor.clone(),
                }),
                ..Default::default()
            })
            .await
            .expect("lists")
            .into_inner();
        paged.extend(
            response
                .conversations
                .into_iter()
                .map(|c| c.conversation_id),
        );
        cursor = response.page.expect("page").next_cursor;
        if cursor.is_empty() {
            break;
        }
        assert!(paged.len() <= all.len(), "paging never ends");
    }
    assert_eq!(paged, all);
    assert_invalid(
        admin
            .list_conversations(ListConversationsRequest {
                status: 42,
                ..Default::default()
            })
            .await,
        "invalid status",
    );
    store.stop().await.expect("stops");
}

/// The care pipeline: defaults until set, an admin's custom stages, new customers in its
/// first stage, statuses outside it refused by name.
async fn care_pipeline_is_the_tenants_own(kind: BackendKind) {
    use giao_proto::messagestore::{
        CarePipeline, CareStage, GetCarePipelineRequest, SetCarePipelineRequest,
    };
    let (_backend, store, mut admin) = start(kind).await;
    let keys = |pipeline: &CarePipeline| {
        pipeline
            .stages
            .iter()
            .map(|stage| stage.key.clone())
            .collect::<Vec<_>>()
    };
    let defaults = admin
        .get_care_pipeline(GetCarePipelineRequest {})
        .await
        .expect("pipeline")
        .into_inner();
    assert_eq!(
        keys(&defaults),
        ["new", "contacted", "interested", "quoted", "won", "lost"]
    );
    assert!(
        defaults
            .stages
            .iter()
            .any(|stage| stage.key == "won" && stage.terminal && stage.won)
    );

    let stage = |key: &str, label: &str, terminal: bool, won: bool| CareStage {
        key: key.into(),
        label: label.into(),
        terminal,
        won,
    };
    let custom = CarePipeline {
        stages: vec![
            stage("moi", "Mới", false, false),
            stage("tu_van", "Đang tư vấn", false, false),
            stage("chot", "Chốt đơn", true, true),
            stage("huy", "Huỷ", true, false),
        ],
    };
    let mut agent = message_store_client(&store, TENANT, "agent").await;
    let error = agent
        .set_care_pipeline(SetCarePipelineRequest {
            pipeline: Some(custom.clone()),
        })
        .await
        .expect_err("an admin's decision");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    let set = admin
        .set_care_pipeline(SetCarePipelineRequest {
            pipeline: Some(custom.clone()),
        })
        .await
        .expect("set")
        .into_inner();
    assert_eq!(set, custom);
    assert_eq!(
        agent
            .get_care_pipeline(GetCarePipelineRequest {})
            .await
            .expect("agents read it")
            .into_inner(),
        custom
    );
    for (pipeline, expected) in [
        (
            CarePipeline {
                stages: vec![
                    stage("moi", "Mới", false, false),
                    stage("moi", "Lại mới", false, false),
                ],
            },
            "invalid pipeline.stages[1].key",
        ),
        (CarePipeline { stages: vec![] }, "invalid pipeline.stages"),
        (
            CarePipeline {
                stages: vec![stage("  ", "Trống", false, false)],
            },
            "missing pipeline.stages[0].key",
        ),
    ] {
        assert_invalid(
            admin
                .set_care_pipeline(SetCarePipelineRequest {
                    pipeline: Some(pipeline),
                })
                .await,
            expected,
        );
    }
    let error = admin
        .set_care_pipeline(SetCarePipelineRequest { pipeline: None })
        .await
        .expect_err("no pipeline");
    assert_eq!(error.message(), "missing pipeline: required");
    // The refused pipelines changed nothing.
    assert_eq!(
        admin
            .get_care_pipeline(GetCarePipelineRequest {})
            .await
            .expect("pipeline")
            .into_inner(),
        custom
    );

    let conversation_id = admin
        .append_inbound(inbound("oa-1", "u-1", "Hạnh", "m1", "Chào shop"))
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message")
        .conversation_id;
    let contact_id = contact_of(&mut admin, &conversation_id).await;
    let contact = admin
        .get_contact(GetContactRequest {
            contact_id: contact_id.clone(),
        })
        .await
        .expect("contact")
        .into_inner();
    assert_eq!(
        contact.care_status, "moi",
        "a new customer starts in the first stage"
    );
    let care_status = |status: &str| UpdateContactRequest {
        contact_id: contact_id.clone(),
        update_mask: vec!["care_status".into()],
        care_status: status.into(),
        ..Default::default()
    };
    // A default stage, not this tenant's.
    assert_invalid(
        admin.update_contact(care_status("quoted")).await,
        "invalid care_status \"quoted\"",
    );
    let updated = admin
        .update_contact(care_status("tu_van"))
        .await
        .expect("a stage of the pipeline")
        .into_inner();
    assert_eq!(updated.care_status, "tu_van");
    // Another tenant still has the defaults.
    let mut other = message_store_client(&store, "other-co", "admin").await;
    assert_eq!(
        keys(
            &other
                .get_care_pipeline(GetCarePipelineRequest {})
                .await
                .expect("pipeline")
                .into_inner()
        ),
        keys(&defaults)
    );
    store.stop().await.expect("stops");
}

/// Search finds notes (with their snippet) and pages through message hits with its cursor:
/// every match once, newest first; contacts and notes come on the first page only.
async fn search_finds_notes_and_pages(kind: BackendKind) {
    use giao_proto::messagestore::AddNoteRequest;
    let (_backend, store, mut admin) = start(kind).await;
    let mut matching = Vec::new();
    for index in 0..11 {
        let text = if index % 3 == 0 {
            format!("Hỏi về đổi trả lần {index}")
        } else {
            format!("Bảo hành máy lần {index}")
        };
        let message = admin
            .append_inbound(inbound_at(
                "oa-1",
                "u-1",
                "Tâm",
                &format!("m{index}"),
                &text,
                index / 2,
            ))
            .await
            .expect("stored")
            .into_inner()
            .message
            .expect("message");
        if index % 3 != 0 {
            matching.push(message.message_id);
        }
    }
    let conversation_id = {
        let history = admin
            .list_conversations(ListConversationsRequest::default())
            .await
            .expect("lists")
            .into_inner()
            .conversations;
        history[0].conversation_id.clone()
    };
    let contact_id = contact_of(&mut admin, &conversation_id).await;
    let note = admin
        .add_note(AddNoteRequest {
            contact_id: contact_id.clone(),
            conversation_id: conversation_id.clone(),
            text: "Máy còn BẢO HÀNH đến tháng 6".into(),
            ..Default::default()
        })
        .await
        .expect("noted")
        .into_inner();

    let mut seen = Vec::new();
    let mut notes = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let response = admin
            .search(search_page("bao hanh", 3, &cursor))
            .await
            .expect("search")
            .into_inner();
        pages += 1;
        for hit in response.hits {
            match hit.hit {
                Some(Hit::Message(message)) => {
                    assert!(hit.snippet.contains("[[Bảo hành]]"), "{}", hit.snippet);
                    seen.push((
                        message.sent_at.expect("sent_at").seconds,
                        message.message_id,
                    ));
                }
                Some(Hit::Note(found)) => {
                    assert_eq!(pages, 1, "notes come on the first page");
                    assert!(hit.snippet.contains("[[BẢO HÀNH]]"), "{}", hit.snippet);
                    assert_eq!(hit.conversation_id, conversation_id);
                    notes.push(found.note_id);
                }
                other => panic!("unexpected hit {other:?}"),
            }
        }
        cursor = response.page.expect("page").next_cursor;
        if cursor.is_empty() {
            break;
        }
        assert!(pages < 20, "paging never ends");
    }
    assert_eq!(notes, vec![note.note_id.clone()]);
    assert_eq!(pages, 3, "7 matches in pages of 3");
    let ids: Vec<&String> = seen.iter().map(|(_, id)| id).collect();
    let unique: std::collections::HashSet<&&String> = ids.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no hit twice: {seen:?}");
    let mut expected = matching.clone();
    expected.sort();
    let mut found: Vec<String> = ids.iter().map(|id| (*id).clone()).collect();
    found.sort();
    assert_eq!(found, expected, "every match found");
    assert!(
        seen.windows(2).all(|pair| pair[0].0 >= pair[1].0),
        "newest first: {seen:?}"
    );
    // Scoped to notes: the note alone; a bad cursor is named.
    let hits = admin
        .search(SearchRequest {
            scope: giao_proto::messagestore::SearchScope::Notes as i32,
            ..search_page("con bao hanh", 10, "")
        })
        .await
        .expect("search")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(matches!(&hits[0].hit, Some(Hit::Note(found)) if found.note_id == note.note_id));
    assert_invalid(
        admin.search(search_page("bao hanh", 3, "garbage")).await,
        "invalid page.cursor",
    );

    // A search scoped to notes or to contacts pages through them with its own cursor.
    for n in 0..4 {
        add_note(
            &mut admin,
            &contact_id,
            &format!("Lần {n}: hỏi lại bảo hành"),
        )
        .await;
    }
    let mut others = Vec::new();
    for n in 0..4 {
        let conversation = admin
            .append_inbound(inbound(
                "oa-1",
                &format!("u-other-{n}"),
                &format!("Khách {n}"),
                &format!("o{n}"),
                "Chào shop",
            ))
            .await
            .expect("stored")
            .into_inner()
            .message
            .expect("message")
            .conversation_id;
        others.push(contact_of(&mut admin, &conversation).await);
    }
    let page_through = |scope: giao_proto::messagestore::SearchScope, query: &'static str| {
        let mut client = admin.clone();
        async move {
            let (mut ids, mut pages, mut cursor) = (Vec::new(), 0, String::new());
            loop {
                let response = client
                    .search(SearchRequest {
                        scope: scope as i32,
                        ..search_page(query, 2, &cursor)
                    })
                    .await
                    .expect("search")
                    .into_inner();
                pages += 1;
                ids.extend(response.hits.into_iter().map(|hit| match hit.hit {
                    Some(Hit::Note(note)) => note.note_id,
                    Some(Hit::Contact(contact)) => contact.contact_id,
                    other => panic!("a {scope:?} search found {other:?}"),
                }));
                cursor = response.page.expect("page").next_cursor;
                if cursor.is_empty() {
                    return (ids, pages);
                }
                assert!(pages < 20, "paging never ends");
            }
        }
    };
    for (scope, query, expected) in [
        (giao_proto::messagestore::SearchScope::Notes, "bao hanh", 5),
        // Every customer here left the same phone number.
        (
            giao_proto::messagestore::SearchScope::Contacts,
            "0912345678",
            5,
        ),
    ] {
        let (ids, pages) = page_through(scope, query).await;
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(
            (ids.len(), unique.len(), pages),
            (expected, expected, 3),
            "{scope:?}: {ids:?}"
        );
    }

    // Within one contact: its messages and notes only.
    let within = |contact: &str| SearchRequest {
        contact_id: contact.into(),
        ..search_page("bao hanh", 50, "")
    };
    let hits = admin
        .search(within(&contact_id))
        .await
        .expect("search")
        .into_inner()
        .hits;
    let messages = hits
        .iter()
        .filter(|hit| matches!(hit.hit, Some(Hit::Message(_))))
        .count();
    let notes = hits
        .iter()
        .filter(|hit| matches!(&hit.hit, Some(Hit::Note(note)) if note.contact_id == contact_id))
        .count();
    assert_eq!((messages, notes, hits.len()), (7, 5, 12), "{hits:?}");
    let hits = admin
        .search(within(&others[0]))
        .await
        .expect("search")
        .into_inner()
        .hits;
    assert!(hits.is_empty(), "{hits:?}");
    let mut agent = message_store_client(&store, TENANT, "agent").await;
    assert_not_found(
        agent.search(within(&contact_id)).await,
        "contact_id",
        "searching a customer the agent does not have",
    );
    store.stop().await.expect("stops");
}

/// Collects the envelopes of `event_type` on the test's bus until the token is cancelled.
fn collect_events(
    backend: &Backend,
    durable: &str,
    event_type: &str,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<giao_proto::events::Envelope>>>,
    tokio_util::sync::CancellationToken,
) {
    let collected: std::sync::Arc<std::sync::Mutex<Vec<giao_proto::events::Envelope>>> =
        std::sync::Arc::default();
    let sink = collected.clone();
    let bus_config = backend.bus.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = stop.clone();
    let spec = giao_bus::ConsumerSpec {
        durable_name: durable.into(),
        filter_subjects: vec![giao_bus::envelope::subject_filter(event_type)],
        ack_wait: std::time::Duration::from_secs(5),
        max_deliver: None,
        inactive_threshold: None,
    };
    tokio::spawn(async move {
        let bus = giao_bus::connect(&bus_config).await.expect("bus");
        let _ =
            giao_bus::run_consumer(bus, spec, listener, move |delivery: &giao_bus::Delivery| {
                let sink = sink.clone();
                let decoded = giao_bus::envelope::decode(delivery);
                async move {
                    if let Ok((envelope, _)) = decoded {
                        sink.lock().expect("lock").push(envelope);
                    }
                    giao_bus::HandlerOutcome::Done
                }
            })
            .await;
    });
    (collected, stop)
}

/// A recall the channel reports is stored, then announced by message-store with the giao
/// message id and the stored recall, once per message however often it is reported; the
/// announcement does not come back to message-store as a new recall (a recall published as
/// message-store's own, under an event id nothing else used, is not applied).
async fn stored_recalls_are_announced_once(kind: BackendKind) {
    use giao_bus::envelope::EventPublisher;
    use giao_proto::events::{self, envelope::Payload};
    let (backend, store, mut admin) = start(kind).await;
    let (collected, stop) = collect_events(&backend, "test-recalls", "message_recalled");
    let mut ids = Vec::new();
    for (id, user) in [("m1", "u-1"), ("m2", "u-1"), ("m3", "u-2"), ("m4", "u-2")] {
        ids.push(
            admin
                .append_inbound(inbound("oa-1", user, "Khoa", id, "Em gửi nhầm"))
                .await
                .expect("stored")
                .into_inner()
                .message
                .expect("message"),
        );
    }
    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    let connector = EventPublisher::new(bus.clone(), "connector");
    let recall = |external_id: &str, by: &str| {
        Payload::MessageRecalled(events::MessageRecalled {
            channel_account_id: "oa-1".into(),
            external_message_id: external_id.into(),
            recalled_by_external_id: by.into(),
            recalled_at: Some(minute(5)),
            ..Default::default()
        })
    };
    // The same recall reported twice (another event id), then a later recall of m2 whose
    // announcement proves the earlier reports were all handled (one consumer, in order).
    for (event_id, external_id, by) in [
        ("recall-1", "m1", "u-1"),
        ("recall-1-again", "m1", "someone-else"),
        ("recall-2", "m2", "u-1"),
    ] {
        connector
            .publish(TENANT, event_id.into(), recall(external_id, by))
            .await
            .expect("published");
    }
    let announced = |message_id: &str| {
        collected
            .lock()
            .expect("lock")
            .iter()
            .filter(|envelope| envelope.producer == "message-store")
            .filter_map(|envelope| match &envelope.payload {
                Some(Payload::MessageRecalled(recall)) if recall.message_id == message_id => {
                    Some(recall.clone())
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let announcement = |message_id: &str, what: &'static str| {
        let message_id = message_id.to_string();
        giao_testkit::wait_until(std::time::Duration::from_secs(20), what, move || {
            let done = !announced(&message_id).is_empty();
            async move { done }
        })
    };
    announcement(&ids[1].message_id, "the second recall announced").await;
    let first = announced(&ids[0].message_id);
    assert_eq!(
        first.len(),
        1,
        "one announcement per recalled message: {first:?}"
    );
    assert_eq!(
        first[0].recalled_by_external_id, "u-1",
        "the first report wins"
    );
    assert_eq!(first[0].channel_account_id, "oa-1");
    assert_eq!(first[0].external_message_id, "m1");
    assert_eq!(first[0].recalled_at, Some(minute(5)));

    // A recall in message-store's name, under a fresh event id (so the bus cannot dedupe
    // it), of m3, which nobody recalled; then the channel's recall of m4, whose
    // announcement proves the consumer is past the first.
    let mut own = recall("m3", "u-2");
    if let Payload::MessageRecalled(recall) = &mut own {
        recall.message_id = ids[2].message_id.clone();
    }
    EventPublisher::new(bus, "message-store")
        .publish(TENANT, "own-announcement-m3".into(), own)
        .await
        .expect("published");
    connector
        .publish(TENANT, "recall-4".into(), recall("m4", "u-2"))
        .await
        .expect("published");
    announcement(&ids[3].message_id, "the recall of m4 announced").await;
    assert_eq!(
        announced(&ids[2].message_id).len(),
        1,
        "only the published one: m3 was not announced by the store"
    );
    let history = admin
        .get_history(GetHistoryRequest {
            conversation_id: ids[2].conversation_id.clone(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .messages;
    let m3 = history
        .iter()
        .find(|message| message.message_id == ids[2].message_id)
        .expect("m3 in its history");
    assert!(!m3.recalled, "{m3:?}");
    assert!(
        history
            .iter()
            .any(|message| message.message_id == ids[3].message_id && message.recalled)
    );

    let history = admin
        .get_history(GetHistoryRequest {
            conversation_id: ids[0].conversation_id.clone(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .messages;
    assert!(
        history
            .iter()
            .all(|message| message.recalled && message.recalled_by == "u-1")
    );
    assert!(
        history
            .iter()
            .all(|message| message.content.as_ref().map(|c| c.text.as_str()) == Some("Em gửi nhầm")),
        "the original stays readable"
    );
    stop.cancel();
    store.stop().await.expect("stops");
}

/// A batch announces its messages on the message_stored subject as entries of
/// `MessagesStored` events: each message once, in the batch's order, each entry the very
/// announcement a single append makes (same event id, same content); a batch of long texts
/// is split so no bus message nears the payload limit; a retried batch announces nothing new.
async fn batches_announce_each_stored_message_once(kind: BackendKind) {
    use giao_bus::envelope::{events_of, message_stored_event_id};
    use giao_proto::{events::envelope::Payload, messagestore::AppendInboundBatchRequest};
    use prost::Message as _;
    let (backend, store, mut admin) = start(kind).await;
    let (collected, stop) = collect_events(&backend, "test-stored", "message_stored");
    let message = |customer: &str, id: &str, text: &str| {
        inbound("oa-1", customer, "Khách", id, text)
            .message
            .expect("message")
    };
    let single = admin
        .append_inbound(AppendInboundRequest {
            message: Some(message("u-0", "m-single", "Chào shop")),
        })
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message");
    // 30 texts at the size limit (8,000 characters, 3 bytes each in UTF-8): about 720 KB of
    // entries, more than one bus message should carry.
    let long = "ệ".repeat(8_000);
    let mut batch: Vec<InboundMessage> = (0..30)
        .map(|i| message(&format!("u-{}", i % 3), &format!("b-{i}"), &long))
        .collect();
    batch.push(batch[4].clone());
    batch.push(message("u-0", "m-single", "Chào shop"));
    let append = |messages: Vec<InboundMessage>| {
        let mut admin = admin.clone();
        async move {
            admin
                .append_inbound_batch(AppendInboundBatchRequest { messages })
                .await
                .expect("batch stored")
                .into_inner()
                .results
        }
    };
    let results = append(batch.clone()).await;
    let ids = |results: &[giao_proto::messagestore::AppendInboundResponse]| -> Vec<String> {
        results
            .iter()
            .map(|result| result.message.as_ref().expect("message").message_id.clone())
            .collect()
    };
    assert_eq!(
        ids(&append(batch).await),
        ids(&results),
        "a retry answers the same"
    );
    // The consumer reads in order: once the marker's batch arrives, everything before did.
    let marker = append(vec![message("u-9", "m-marker", "hết")]).await;
    let marker_id = marker[0]
        .message
        .as_ref()
        .expect("marker")
        .message_id
        .clone();
    giao_testkit::wait_until(
        std::time::Duration::from_secs(20),
        "the marker announced",
        || {
            let seen = collected.lock().expect("lock").iter().any(|envelope| {
                events_of(envelope.clone()).iter().any(|event| {
                    matches!(&event.payload, Some(Payload::MessageStored(stored)) if stored.message_id == marker_id)
                })
            });
            async move { seen }
        },
    )
    .await;
    stop.cancel();
    let envelopes = collected.lock().expect("lock").clone();

    // What the batch stored, each message once in the batch's order.
    let mut expected: Vec<giao_proto::messagestore::Message> = Vec::new();
    for result in &results {
        let stored = result.message.clone().expect("message");
        if !expected
            .iter()
            .any(|seen| seen.message_id == stored.message_id)
        {
            expected.push(stored);
        }
    }
    assert_eq!(expected.len(), 31, "30 new messages and m-single");
    let batches: Vec<&giao_proto::events::Envelope> = envelopes
        .iter()
        .filter(|envelope| matches!(envelope.payload, Some(Payload::MessagesStored(_))))
        .collect();
    assert_eq!(
        batches.len(),
        3,
        "the long batch in two parts, then the marker's"
    );
    for envelope in &batches {
        assert!(
            envelope.encoded_len() < 600 * 1024,
            "a bus message of {} bytes",
            envelope.encoded_len()
        );
        assert_eq!(envelope.producer, "message-store");
    }
    let entries: Vec<giao_proto::events::Envelope> = batches
        .iter()
        .take(2)
        .flat_map(|envelope| events_of((*envelope).clone()))
        .collect();
    // (event id, message id, conversation id, text); texts compared by digest, so that a
    // failure prints what differs rather than 30 long texts.
    let digest = |text: &str| {
        use sha2::Digest as _;
        format!(
            "{} chars, sha256 {}",
            text.chars().count(),
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        )
    };
    let announced: Vec<(String, String, String, String)> = entries
        .iter()
        .filter_map(|event| match &event.payload {
            Some(Payload::MessageStored(stored)) => Some((
                event.event_id.clone(),
                stored.message_id.clone(),
                stored.conversation_id.clone(),
                digest(&stored.text),
            )),
            _ => None,
        })
        .collect();
    let wanted: Vec<(String, String, String, String)> = expected
        .iter()
        .map(|stored| {
            (
                message_stored_event_id(&stored.message_id),
                stored.message_id.clone(),
                stored.conversation_id.clone(),
                digest(
                    stored
                        .content
                        .as_ref()
                        .map_or("", |content| content.text.as_str()),
                ),
            )
        })
        .collect();
    assert_eq!(announced, wanted);
    assert!(
        entries.iter().all(|event| matches!(&event.payload,
            Some(Payload::MessageStored(stored)) if !stored.contact_id.is_empty()
                && stored.direction == giao_proto::common::Direction::Inbound as i32)),
        "each entry names its contact and direction"
    );
    // m-single's entry is its single announcement again: consumers dedupe it on the id.
    let alone: Vec<&giao_proto::events::Envelope> = envelopes
        .iter()
        .filter(|envelope| matches!(envelope.payload, Some(Payload::MessageStored(_))))
        .collect();
    assert_eq!(alone.len(), 1, "only the single append announces alone");
    let again = entries
        .iter()
        .find(|event| event.event_id == alone[0].event_id)
        .expect("m-single in the batch");
    assert_eq!(again.payload, alone[0].payload);
    assert_eq!(
        alone[0].event_id,
        message_stored_event_id(&single.message_id)
    );
    store.stop().await.expect("stops");
}

/// A replica remembers conversation ids. When a conversation it remembers is gone (only a
/// database restored under a running replica does that), a batch still stores every
/// message, in a conversation it finds or creates again, and nothing points at the old id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_batches_survive_a_remembered_conversation_that_is_gone() {
    use giao_proto::messagestore::AppendInboundBatchRequest;
    let mut backend = Backend::new(BackendKind::Postgres).await;
    let config = message_store_config(&mut backend).await;
    let url = config.database.url.clone();
    let store = start_message_store(config).await;
    let mut admin = message_store_client(&store, TENANT, "admin").await;
    let batch = |id: &str| AppendInboundBatchRequest {
        messages: ["u-1", "u-2"]
            .iter()
            .map(|customer| {
                inbound(
                    "oa-1",
                    customer,
                    "Khách",
                    &format!("{id}-{customer}"),
                    "Alo shop",
                )
                .message
                .expect("message")
            })
            .collect(),
    };
    let first = admin
        .append_inbound_batch(batch("m1"))
        .await
        .expect("stored")
        .into_inner()
        .results;
    let gone = first[0]
        .message
        .as_ref()
        .expect("message")
        .conversation_id
        .clone();

    // The state of a backup taken before u-1 ever wrote.
    let pool = sqlx::PgPool::connect(&url).await.expect("database");
    for statement in [
        "DELETE FROM messages WHERE conversation_id = $1::uuid",
        "DELETE FROM conversations WHERE id = $1::uuid",
    ] {
        sqlx::query(statement)
            .bind(&gone)
            .execute(&pool)
            .await
            .expect("deleted");
    }

    let second = admin
        .append_inbound_batch(batch("m2"))
        .await
        .expect("stored although a remembered conversation is gone")
        .into_inner()
        .results;
    assert!(second.iter().all(|result| result.created));
    let again = second[0]
        .message
        .as_ref()
        .expect("message")
        .conversation_id
        .clone();
    assert_ne!(again, gone, "u-1 has a conversation again, a new one");
    assert!(second[0].conversation_created);
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages m WHERE NOT EXISTS \
           (SELECT 1 FROM conversations c WHERE c.id = m.conversation_id)",
    )
    .fetch_one(&pool)
    .await
    .expect("counted");
    assert_eq!(
        orphans, 0,
        "no message points at a conversation that is gone"
    );
    let history = admin
        .get_history(GetHistoryRequest {
            conversation_id: again,
            page: Some(PageRequest {
                page_size: 10,
                cursor: String::new(),
            }),
            direction: 0,
        })
        .await
        .expect("history")
        .into_inner()
        .messages;
    assert_eq!(history.len(), 1);
    store.stop().await.expect("stops");
}

/// PostgreSQL keeps messages in monthly partitions created ahead of time; a message from a
/// month without one (far in the past) is still stored, in the default partition, and read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_partitions_exist_ahead_and_old_months_are_kept() {
    use chrono::{Datelike, Months, NaiveDate};
    let mut backend = Backend::new(BackendKind::Postgres).await;
    let config = message_store_config(&mut backend).await;
    let url = config.database.url.clone();
    let store = start_message_store(config).await;
    let mut admin = message_store_client(&store, TENANT, "admin").await;
    let mut old = inbound("oa-1", "u-1", "Cũ", "m-2015", "Tin nhắn từ năm 2015");
    if let Some(message) = old.message.as_mut() {
        // 2015-03-10.
        message.sent_at = Some(prost_types::Timestamp {
            seconds: 1_425_945_600,
            nanos: 0,
        });
    }
    // Served only once start-up housekeeping (which creates the partitions) is done.
    let old = admin
        .append_inbound(old)
        .await
        .expect("a month without a partition is stored")
        .into_inner()
        .message
        .expect("message");
    let recent = admin
        .append_inbound(inbound("oa-1", "u-1", "Cũ", "m-now", "Tin nhắn hôm nay"))
        .await
        .expect("stored")
        .into_inner()
        .message
        .expect("message");

    let pool = sqlx::PgPool::connect(&url).await.expect("database");
    let partitions: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'messages'::regclass",
    )
    .fetch_all(&pool)
    .await
    .expect("partitions");
    let partitions: Vec<String> = partitions.into_iter().map(|(name,)| name).collect();
    let today = chrono::Utc::now().date_naive();
    let this_month = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).expect("date");
    for month in [this_month, this_month + Months::new(1)] {
        let name = format!("messages_{}", month.format("%Y_%m"));
        assert!(
            partitions.contains(&name),
            "{name} missing from {partitions:?}"
        );
    }
    let home = |id: String| {
        let pool = pool.clone();
        async move {
            let (table,): (String,) =
                sqlx::query_as("SELECT tableoid::regclass::text FROM messages WHERE id = $1::uuid")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .expect("stored row");
            table
        }
    };
    assert_eq!(home(old.message_id.clone()).await, "messages_default");
    assert_eq!(
        home(recent.message_id.clone()).await,
        format!("messages_{}", this_month.format("%Y_%m"))
    );
    let history = admin
        .get_history(GetHistoryRequest {
            conversation_id: old.conversation_id.clone(),
            direction: 1,
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .messages;
    let texts: Vec<&str> = history
        .iter()
        .map(|message| message.content.as_ref().expect("content").text.as_str())
        .collect();
    assert_eq!(texts, ["Tin nhắn từ năm 2015", "Tin nhắn hôm nay"]);
    pool.close().await;
    store.stop().await.expect("stops");
}

giao_tests::on_both_backends!(
    captured_customers_become_contacts_with_codes,
    contacts_are_edited_with_clear_errors,
    search_folds_vietnamese_and_respects_visibility,
    bad_input_is_rejected_and_nothing_half_written,
    outbound_delivery_and_recall,
    notes_merges_reactions_and_export,
    edits_keep_versions_and_quotes_resolve,
    attachments_follow_message_visibility,
    batches_match_one_by_one_appends,
    concurrent_batches_create_each_customer_once,
    batches_and_owner_changes_share_conversations_safely,
    exports_group_histories_and_notes,
    conversations_close_and_reopen,
    followers_become_contacts_with_their_lead_source,
    other_tenants_ids_answer_not_found,
    agents_and_supervisors_see_only_their_share,
    unknown_ids_name_their_field,
    history_and_lists_page_without_gaps,
    care_pipeline_is_the_tenants_own,
    search_finds_notes_and_pages,
    stored_recalls_are_announced_once,
    batches_announce_each_stored_message_once,
);
