//! The thin path through the real stack, on both backends: a simulated Zalo message →
//! connector publishes MessageReceived → message-store stores it idempotently → GetHistory.

use std::time::Duration;

use giao_bus::envelope::EventPublisher;
use giao_proto::{
    common::{ChannelUser, ContentType, MessageContent, PageRequest},
    connector::SimulateInboundRequest,
    events::{self, envelope::Payload},
    messagestore::{GetHistoryRequest, ListConversationsRequest, Message},
};
use giao_tests::{
    Backend, BackendKind, Running, connector_client, connector_config, message_store_client,
    message_store_config, start_connector, start_message_store,
};

const TENANT: &str = "acme";

fn customer(id: &str, name: &str) -> ChannelUser {
    ChannelUser {
        external_user_id: id.into(),
        display_name: name.into(),
        ..Default::default()
    }
}

fn text(body: &str) -> MessageContent {
    MessageContent {
        r#type: ContentType::Text as i32,
        text: body.into(),
        ..Default::default()
    }
}

/// Every message of every conversation the admin sees, oldest first.
async fn all_messages(store: &Running) -> Vec<Message> {
    let mut client = message_store_client(store, TENANT, "admin").await;
    let conversations = client
        .list_conversations(ListConversationsRequest::default())
        .await
        .expect("lists conversations")
        .into_inner()
        .conversations;
    let mut messages = Vec::new();
    for conversation in conversations {
        let mut cursor = String::new();
        loop {
            let page = client
                .get_history(GetHistoryRequest {
                    conversation_id: conversation.conversation_id.clone(),
                    page: Some(PageRequest {
                        page_size: 7,
                        cursor: cursor.clone(),
                    }),
                    direction: 1,
                })
                .await
                .expect("reads history")
                .into_inner();
            messages.extend(page.messages);
            cursor = page.page.unwrap_or_default().next_cursor;
            if cursor.is_empty() {
                break;
            }
        }
    }
    messages
}

async fn wait_for_messages(store: &Running, count: usize) -> Vec<Message> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let messages = all_messages(store).await;
        if messages.len() >= count || tokio::time::Instant::now() > deadline {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn simulated_message_reaches_history(kind: BackendKind) {
    let mut backend = Backend::new(kind).await;
    let connector = start_connector(connector_config(&mut backend).await).await;
    let store = start_message_store(message_store_config(&mut backend).await).await;

    let mut simulator = connector_client(&connector, TENANT, "admin").await;
    simulator
        .simulate_inbound(SimulateInboundRequest {
            channel_account_id: giao_connector::simulator::DEMO_ACCOUNT.into(),
            customer: Some(customer("cust-lan", "Nguyễn Thị Lan")),
            content: Some(text("Chào shop, còn hàng không ạ?")),
            external_message_id: "zalo-msg-1".into(),
        })
        .await
        .expect("simulated message accepted");

    let messages = wait_for_messages(&store, 1).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert_eq!(message.external_message_id, "zalo-msg-1");
    assert_eq!(
        message.content.as_ref().map(|c| c.text.as_str()),
        Some("Chào shop, còn hàng không ạ?")
    );
    assert_eq!(
        message.channel_account_id,
        giao_connector::simulator::DEMO_ACCOUNT
    );

    // Another tenant sees nothing of it.
    let mut other = message_store_client(&store, "other-co", "admin").await;
    let error = other
        .get_history(GetHistoryRequest {
            conversation_id: message.conversation_id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("another tenant's conversation");
    assert_eq!(error.code(), tonic::Code::NotFound);

    store.stop().await.expect("message-store stops cleanly");
    connector.stop().await.expect("connector stops cleanly");
}

/// The connector retries (same id, deduped by the bus) and the bus redelivers under new
/// event ids (deduped by the store): one message either way.
async fn same_message_three_times_is_stored_once(kind: BackendKind) {
    let mut backend = Backend::new(kind).await;
    let connector = start_connector(connector_config(&mut backend).await).await;
    let store = start_message_store(message_store_config(&mut backend).await).await;

    let mut simulator = connector_client(&connector, TENANT, "admin").await;
    for _ in 0..3 {
        simulator
            .simulate_inbound(SimulateInboundRequest {
                channel_account_id: giao_connector::simulator::DEMO_ACCOUNT.into(),
                customer: Some(customer("cust-minh", "Trần Văn Minh")),
                content: Some(text("Giá bao nhiêu vậy shop?")),
                external_message_id: "zalo-dup".into(),
            })
            .await
            .expect("accepted");
    }
    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    let publisher = EventPublisher::new(bus, "test");
    for attempt in 0..3 {
        publisher
            .publish(
                TENANT,
                format!("redelivery-{attempt}"),
                Payload::MessageReceived(events::MessageReceived {
                    channel_account_id: giao_connector::simulator::DEMO_ACCOUNT.into(),
                    external_message_id: "zalo-dup".into(),
                    external_thread_id: "cust-minh".into(),
                    customer: Some(customer("cust-minh", "Trần Văn Minh")),
                    content: Some(text("Giá bao nhiêu vậy shop?")),
                    ..Default::default()
                }),
            )
            .await
            .expect("published");
    }
    // A marker published last: once it is stored, everything before it was handled.
    publisher
        .publish(
            TENANT,
            "marker".into(),
            Payload::MessageReceived(events::MessageReceived {
                channel_account_id: giao_connector::simulator::DEMO_ACCOUNT.into(),
                external_message_id: "zalo-marker".into(),
                external_thread_id: "cust-minh".into(),
                content: Some(text("marker")),
                ..Default::default()
            }),
        )
        .await
        .expect("published");

    let messages = wait_for_messages(&store, 2).await;
    let duplicates = messages
        .iter()
        .filter(|m| m.external_message_id == "zalo-dup")
        .count();
    assert_eq!(duplicates, 1, "{messages:?}");
    assert_eq!(messages.len(), 2, "{messages:?}");
    store.stop().await.expect("stops");
    connector.stop().await.expect("stops");
}

/// message-store stopped mid-stream and restarted: nothing lost, nothing duplicated.
async fn restart_mid_stream_loses_and_duplicates_nothing(kind: BackendKind) {
    const TOTAL: usize = 40;
    let mut backend = Backend::new(kind).await;
    let store_config = message_store_config(&mut backend).await;
    let store = start_message_store(store_config.clone()).await;
    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    let publisher = EventPublisher::new(bus, "test");
    let publish = |index: usize| {
        let publisher = publisher.clone();
        async move {
            publisher
                .publish(
                    TENANT,
                    format!("stream-{index}"),
                    Payload::MessageReceived(events::MessageReceived {
                        channel_account_id: "acc-1".into(),
                        external_message_id: format!("m-{index}"),
                        external_thread_id: format!("cust-{}", index % 4),
                        content: Some(text(&format!("tin nhắn {index}"))),
                        ..Default::default()
                    }),
                )
                .await
                .expect("published");
        }
    };
    for index in 0..TOTAL / 2 {
        publish(index).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store.stop().await.expect("stops cleanly mid-stream");
    for index in TOTAL / 2..TOTAL {
        publish(index).await;
    }
    let store = start_message_store(store_config).await;
    let messages = wait_for_messages(&store, TOTAL).await;
    let mut ids: Vec<_> = messages
        .iter()
        .map(|m| m.external_message_id.clone())
        .collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "duplicates stored");
    assert_eq!(ids.len(), TOTAL, "messages lost: {ids:?}");
    store.stop().await.expect("stops");
}

giao_tests::on_both_backends!(
    simulated_message_reaches_history,
    same_message_three_times_is_stored_once,
    restart_mid_stream_loses_and_duplicates_nothing,
);
