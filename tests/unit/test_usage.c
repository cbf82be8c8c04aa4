/* Usage parsing: real wire bodies from tools/mockllm for every dialect,
 * whole and streamed, split at every byte position, with malformed events
 * in the middle. The fixtures were captured from build/mockllm with
 * x-mock: in=1200;out=300;cache_read=200;cache_write=50;reasoning=40 and
 * tools (get_weather[,read_file]), so every dialect must normalize to the
 * same numbers. Session ids (session.c, the other half of what the account
 * stage reads from a request) are tested at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include "account/session.h"
#include "account/sse.h"
#include "account/usage.h"
#include "dialect/dialect.h"

/* ---- fixtures captured from build/mockllm ---- */

static const char CHAT_JSON[] =
    "{\"id\":\"chatcmpl-kftOGz3orZ8H7a5e1OdgmgbhIHBei\",\"object\":\"chat.completion\",\"created\":1795673721,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,\"refusal\":null,\"annotations\":[],\"tool_calls\":[{\"id\":\"call_sJog10PCJCT4T9pAYvra1m9Z\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"path\\\":\\\"README.md\\\"}\"}},{\"id\":\"call_OoAdn3a40Zxw0afQC1vZenSt\",\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"arguments\":\"{\\\"path\\\":\\\"README.md\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":1200,\"completion_tokens\":300,\"total_tokens\":1500,\"prompt_tokens_details\":{\"cached_tokens\":200,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":40,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}},\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\"}";

static const char CHAT_SSE[] =
    "data: {\"id\":\"chatcmpl-4FHpxLY1nUkJVzsjGPuS4wuIKxwz9\",\"object\":\"chat.completion.chunk\",\"created\":1795673721,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-4FHpxLY1nUkJVzsjGPuS4wuIKxwz9\",\"object\":\"chat.completion.chunk\",\"created\":1795673721,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_m5iZDitpzcVb0laRbHD204X4\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-4FHpxLY1nUkJVzsjGPuS4wuIKxwz9\",\"object\":\"chat.completion.chunk\",\"created\":1795673721,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"path\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-4FHpxLY1nUkJVzsjGPuS4wuIKxwz9\",\"object\":\"chat.completion.chunk\",\"created\":1795673721,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\":\\\"READ\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-4FHpxLY1nUkJVzsjGPuS4wuIKxwz9\",\"object\":\"chat.completion.chunk\",\"created\":1795673721,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ME.md\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-4FHpxLY1nUkJVzsjGPuS4wuIKxwz9\",\"object\":\"chat.completion.chunk\",\"created\":1795673721,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_I4bUko61QOS0yODzFKXhhhN8\",\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-4FHpxLY1nUkJVzsjGPuS4wuIKxwz9\",\"object\":\"chat.completion.chunk\",\"created\":1795673721,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{\\\"path\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-4FHpxLY1nUkJVzsjGPuS4wuIKxwz9\",\"object\":\"chat.completion.chunk\",\"created\":1795673721,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"\\\":\\\"READ\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-4FHpxLY1nUkJVzsjGPuS4wuIKxwz9\",\"object\":\"chat.completion.chunk\",\"created\":1795673721,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"ME.md\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-4FHpxLY1nUkJVzsjGPuS4wuIKxwz9\",\"object\":\"chat.completion.chunk\",\"created\":1795673721,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-4FHpxLY1nUkJVzsjGPuS4wuIKxwz9\",\"object\":\"chat.completion.chunk\",\"created\":1795673721,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[],\"usage\":{\"prompt_tokens\":1200,\"completion_tokens\":300,\"total_tokens\":1500,\"prompt_tokens_details\":{\"cached_tokens\":200,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":40,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n"
    "\n"
    "data: [DONE]\n"
    "\n";

static const char CHAT_MALFORMED_SSE[] =
    "data: {\"id\":\"chatcmpl-WsYrI2Bbvod8ETLGlvvSoMuDe0KWG\",\"object\":\"chat.completion.chunk\",\"created\":1795673728,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-WsYrI2Bbvod8ETLGlvvSoMuDe0KWG\",\"object\":\"chat.completion.chunk\",\"created\":1795673728,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-WsYrI2Bbvod8ETLGlvvSoMuDe0KWG\",\"object\":\"chat.completion.chunk\",\"created\":1795673728,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" th\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-WsYrI2Bbvod8ETLGlvvSoMuDe0KWG\",\"object\":\"chat.completion.chunk\",\"created\":1795673728,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ere\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-WsYrI2Bbvod8ETLGlvvSoMuDe0KWG\",\"object\":\"chat.completion.chunk\",\"created\":1795673728,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_Uv2DhkPw5z20RBwKmYKbpHyp\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {not json\n"
    "\n"
    "data: {\"id\":\"chatcmpl-WsYrI2Bbvod8ETLGlvvSoMuDe0KWG\",\"object\":\"chat.completion.chunk\",\"created\":1795673728,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"path\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-WsYrI2Bbvod8ETLGlvvSoMuDe0KWG\",\"object\":\"chat.completion.chunk\",\"created\":1795673728,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\":\\\"READ\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-WsYrI2Bbvod8ETLGlvvSoMuDe0KWG\",\"object\":\"chat.completion.chunk\",\"created\":1795673728,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ME.md\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-WsYrI2Bbvod8ETLGlvvSoMuDe0KWG\",\"object\":\"chat.completion.chunk\",\"created\":1795673728,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-WsYrI2Bbvod8ETLGlvvSoMuDe0KWG\",\"object\":\"chat.completion.chunk\",\"created\":1795673728,\"model\":\"gpt-4o\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_7c3a1e9b52\",\"choices\":[],\"usage\":{\"prompt_tokens\":1200,\"completion_tokens\":300,\"total_tokens\":1500,\"prompt_tokens_details\":{\"cached_tokens\":200,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":40,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n"
    "\n"
    "data: [DONE]\n"
    "\n";

static const char RESP_JSON[] =
    "{\"id\":\"resp_4ba8ddd1c01d56b840c49fda32eacc687aee0694c3f58efa\",\"object\":\"response\",\"created_at\":1795673721,\"status\":\"completed\",\"background\":false,\"error\":null,\"incomplete_details\":null,\"instructions\":null,\"max_output_tokens\":null,\"max_tool_calls\":null,\"model\":\"gpt-4o\",\"output\":[{\"id\":\"fc_0eb7937306c70ed0c267cc36fd67d37b15e259b2ee3a66a7\",\"type\":\"function_call\",\"status\":\"completed\",\"arguments\":\"{\\\"path\\\":\\\"README.md\\\"}\",\"call_id\":\"call_QC3E8oxor1Kuj2wejzHufNsk\",\"name\":\"get_weather\"},{\"id\":\"fc_913705c73f02ee2cb8987088ee50c82d69bf2f0a74f3cc57\",\"type\":\"function_call\",\"status\":\"completed\",\"arguments\":\"{\\\"path\\\":\\\"README.md\\\"}\",\"call_id\":\"call_O36pYkjLir2yiQ3Im4zQ66G3\",\"name\":\"read_file\"}],\"parallel_tool_calls\":true,\"previous_response_id\":null,\"prompt_cache_key\":null,\"reasoning\":{\"effort\":null,\"summary\":null},\"safety_identifier\":null,\"service_tier\":\"default\",\"store\":true,\"temperature\":1,\"text\":{\"format\":{\"type\":\"text\"},\"verbosity\":\"medium\"},\"tool_choice\":\"auto\",\"tools\":[],\"top_logprobs\":0,\"top_p\":1,\"truncation\":\"disabled\",\"usage\":{\"input_tokens\":1200,\"input_tokens_details\":{\"cached_tokens\":200},\"output_tokens\":300,\"output_tokens_details\":{\"reasoning_tokens\":40},\"total_tokens\":1500},\"user\":null,\"metadata\":{}}";

static const char RESP_MALFORMED_SSE[] =
    "event: response.created\n"
    "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_381e32d35e99e41098a9d593631ff10574831b7cbc63c06f\",\"object\":\"response\",\"created_at\":1795673728,\"status\":\"in_progress\",\"background\":false,\"error\":null,\"incomplete_details\":null,\"instructions\":null,\"max_output_tokens\":null,\"max_tool_calls\":null,\"model\":\"gpt-4o\",\"output\":[],\"parallel_tool_calls\":true,\"previous_response_id\":null,\"prompt_cache_key\":null,\"reasoning\":{\"effort\":null,\"summary\":null},\"safety_identifier\":null,\"service_tier\":\"default\",\"store\":true,\"temperature\":1,\"text\":{\"format\":{\"type\":\"text\"},\"verbosity\":\"medium\"},\"tool_choice\":\"auto\",\"tools\":[],\"top_logprobs\":0,\"top_p\":1,\"truncation\":\"disabled\",\"usage\":null,\"user\":null,\"metadata\":{}}}\n"
    "\n"
    "event: response.in_progress\n"
    "data: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"id\":\"resp_381e32d35e99e41098a9d593631ff10574831b7cbc63c06f\",\"object\":\"response\",\"created_at\":1795673728,\"status\":\"in_progress\",\"background\":false,\"error\":null,\"incomplete_details\":null,\"instructions\":null,\"max_output_tokens\":null,\"max_tool_calls\":null,\"model\":\"gpt-4o\",\"output\":[],\"parallel_tool_calls\":true,\"previous_response_id\":null,\"prompt_cache_key\":null,\"reasoning\":{\"effort\":null,\"summary\":null},\"safety_identifier\":null,\"service_tier\":\"default\",\"store\":true,\"temperature\":1,\"text\":{\"format\":{\"type\":\"text\"},\"verbosity\":\"medium\"},\"tool_choice\":\"auto\",\"tools\":[],\"top_logprobs\":0,\"top_p\":1,\"truncation\":\"disabled\",\"usage\":null,\"user\":null,\"metadata\":{}}}\n"
    "\n"
    "event: response.output_item.added\n"
    "data: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"id\":\"msg_3e89b5187a8a91b00e0fdbf8f194f172649fc6182b017341\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}\n"
    "\n"
    "event: response.content_part.added\n"
    "data: {\"type\":\"response.content_part.added\",\"sequence_number\":3,\"item_id\":\"msg_3e89b5187a8a91b00e0fdbf8f194f172649fc6182b017341\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"\"}}\n"
    "\n"
    "event: response.output_text.delta\n"
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_3e89b5187a8a91b00e0fdbf8f194f172649fc6182b017341\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\",\"logprobs\":[]}\n"
    "\n"
    "event: response.output_text.delta\n"
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"item_id\":\"msg_3e89b5187a8a91b00e0fdbf8f194f172649fc6182b017341\",\"output_index\":0,\"content_index\":0,\"delta\":\" th\",\"logprobs\":[]}\n"
    "\n"
    "event: response.output_text.delta\n"
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":6,\"item_id\":\"msg_3e89b5187a8a91b00e0fdbf8f194f172649fc6182b017341\",\"output_index\":0,\"content_index\":0,\"delta\":\"ere\",\"logprobs\":[]}\n"
    "\n"
    "event: response.output_text.done\n"
    "data: {\"type\":\"response.output_text.done\",\"sequence_number\":7,\"item_id\":\"msg_3e89b5187a8a91b00e0fdbf8f194f172649fc6182b017341\",\"output_index\":0,\"content_index\":0,\"text\":\"Hi there\",\"logprobs\":[]}\n"
    "\n"
    "data: {not json\n"
    "\n"
    "event: response.content_part.done\n"
    "data: {\"type\":\"response.content_part.done\",\"sequence_number\":8,\"item_id\":\"msg_3e89b5187a8a91b00e0fdbf8f194f172649fc6182b017341\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"Hi there\"}}\n"
    "\n"
    "event: response.output_item.done\n"
    "data: {\"type\":\"response.output_item.done\",\"sequence_number\":9,\"output_index\":0,\"item\":{\"id\":\"msg_3e89b5187a8a91b00e0fdbf8f194f172649fc6182b017341\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"Hi there\"}],\"role\":\"assistant\"}}\n"
    "\n"
    "event: response.output_item.added\n"
    "data: {\"type\":\"response.output_item.added\",\"sequence_number\":10,\"output_index\":1,\"item\":{\"id\":\"fc_3c19e34e75476c0ea49a540f17d3e9d6a09d8f0413516ece\",\"type\":\"function_call\",\"status\":\"in_progress\",\"arguments\":\"\",\"call_id\":\"call_gduV9IrsS0mx53BWZzCsMDmO\",\"name\":\"get_weather\"}}\n"
    "\n"
    "event: response.function_call_arguments.delta\n"
    "data: {\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":11,\"item_id\":\"fc_3c19e34e75476c0ea49a540f17d3e9d6a09d8f0413516ece\",\"output_index\":1,\"delta\":\"{\\\"path\"}\n"
    "\n"
    "event: response.function_call_arguments.delta\n"
    "data: {\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":12,\"item_id\":\"fc_3c19e34e75476c0ea49a540f17d3e9d6a09d8f0413516ece\",\"output_index\":1,\"delta\":\"\\\":\\\"READ\"}\n"
    "\n"
    "event: response.function_call_arguments.delta\n"
    "data: {\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":13,\"item_id\":\"fc_3c19e34e75476c0ea49a540f17d3e9d6a09d8f0413516ece\",\"output_index\":1,\"delta\":\"ME.md\\\"}\"}\n"
    "\n"
    "event: response.function_call_arguments.done\n"
    "data: {\"type\":\"response.function_call_arguments.done\",\"sequence_number\":14,\"item_id\":\"fc_3c19e34e75476c0ea49a540f17d3e9d6a09d8f0413516ece\",\"output_index\":1,\"name\":\"get_weather\",\"arguments\":\"{\\\"path\\\":\\\"README.md\\\"}\"}\n"
    "\n"
    "event: response.output_item.done\n"
    "data: {\"type\":\"response.output_item.done\",\"sequence_number\":15,\"output_index\":1,\"item\":{\"id\":\"fc_3c19e34e75476c0ea49a540f17d3e9d6a09d8f0413516ece\",\"type\":\"function_call\",\"status\":\"completed\",\"arguments\":\"{\\\"path\\\":\\\"README.md\\\"}\",\"call_id\":\"call_gduV9IrsS0mx53BWZzCsMDmO\",\"name\":\"get_weather\"}}\n"
    "\n"
    "event: response.completed\n"
    "data: {\"type\":\"response.completed\",\"sequence_number\":16,\"response\":{\"id\":\"resp_381e32d35e99e41098a9d593631ff10574831b7cbc63c06f\",\"object\":\"response\",\"created_at\":1795673728,\"status\":\"completed\",\"background\":false,\"error\":null,\"incomplete_details\":null,\"instructions\":null,\"max_output_tokens\":null,\"max_tool_calls\":null,\"model\":\"gpt-4o\",\"output\":[{\"id\":\"msg_3e89b5187a8a91b00e0fdbf8f194f172649fc6182b017341\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"Hi there\"}],\"role\":\"assistant\"},{\"id\":\"fc_3c19e34e75476c0ea49a540f17d3e9d6a09d8f0413516ece\",\"type\":\"function_call\",\"status\":\"completed\",\"arguments\":\"{\\\"path\\\":\\\"README.md\\\"}\",\"call_id\":\"call_gduV9IrsS0mx53BWZzCsMDmO\",\"name\":\"get_weather\"}],\"parallel_tool_calls\":true,\"previous_response_id\":null,\"prompt_cache_key\":null,\"reasoning\":{\"effort\":null,\"summary\":null},\"safety_identifier\":null,\"service_tier\":\"default\",\"store\":true,\"temperature\":1,\"text\":{\"format\":{\"type\":\"text\"},\"verbosity\":\"medium\"},\"tool_choice\":\"auto\",\"tools\":[],\"top_logprobs\":0,\"top_p\":1,\"truncation\":\"disabled\",\"usage\":{\"input_tokens\":1200,\"input_tokens_details\":{\"cached_tokens\":200},\"output_tokens\":300,\"output_tokens_details\":{\"reasoning_tokens\":40},\"total_tokens\":1500},\"user\":null,\"metadata\":{}}}\n"
    "\n";

static const char EMB_JSON[] =
    "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[-0.570737,-0.52121,0.273462,-0.24198,0.241132,-0.295646,0.28803,-0.201871]}],\"model\":\"text-embedding-3-small\",\"usage\":{\"prompt_tokens\":1200,\"total_tokens\":1200}}";

static const char MSG_JSON[] =
    "{\"id\":\"msg_01RM0RtOLeKyNjGqZ7xUiuTQ\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_01XGGYKaY5Uu3NnGSe4o6CVq\",\"name\":\"get_weather\",\"input\":{\"path\":\"README.md\"}},{\"type\":\"tool_use\",\"id\":\"toolu_01DTvYmRxKORizgSeV5xQDPZ\",\"name\":\"read_file\",\"input\":{\"path\":\"README.md\"}}],\"stop_reason\":\"tool_use\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":1200,\"cache_creation_input_tokens\":50,\"cache_read_input_tokens\":200,\"cache_creation\":{\"ephemeral_5m_input_tokens\":50,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":300,\"service_tier\":\"standard\"}}";

static const char MSG_SSE[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01A1MFhsQgTEadagohd1dtyu\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":1200,\"cache_creation_input_tokens\":50,\"cache_read_input_tokens\":200,\"cache_creation\":{\"ephemeral_5m_input_tokens\":50,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":1,\"service_tier\":\"standard\"}}}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01vYZiN8qpOB2ampVtw4euLX\",\"name\":\"get_weather\",\"input\":{}}}\n"
    "\n"
    "event: ping\n"
    "data: {\"type\":\"ping\"}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"path\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\":\\\"READ\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"ME.md\\\"}\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01kOhBwZ6cvjngJm3A8XSTwd\",\"name\":\"read_file\",\"input\":{}}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"path\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\":\\\"READ\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"ME.md\\\"}\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":1200,\"cache_creation_input_tokens\":50,\"cache_read_input_tokens\":200,\"output_tokens\":300}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n";

static const char MSG_MALFORMED_SSE[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_013nVBsSBTYUabkbdxEKAS6Q\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":1200,\"cache_creation_input_tokens\":50,\"cache_read_input_tokens\":200,\"cache_creation\":{\"ephemeral_5m_input_tokens\":50,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":1,\"service_tier\":\"standard\"}}}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n"
    "\n"
    "event: ping\n"
    "data: {\"type\":\"ping\"}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" th\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"ere\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n"
    "\n"
    "data: {not json\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01YqRn3HUFo4RfBaf4CDGVQx\",\"name\":\"get_weather\",\"input\":{}}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"path\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\":\\\"READ\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"ME.md\\\"}\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":1200,\"cache_creation_input_tokens\":50,\"cache_read_input_tokens\":200,\"output_tokens\":300}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n";

static const char COUNT_JSON[] =
    "{\"input_tokens\":1200}";

static const char GEMINI_COUNT_JSON[] =
    "{\"totalTokens\":1200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}]}";

static const char GEMINI_JSON[] =
    "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"path\":\"README.md\"}}},{\"functionCall\":{\"name\":\"read_file\",\"args\":{\"path\":\"README.md\"}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":1200,\"candidatesTokenCount\":300,\"totalTokenCount\":1540,\"cachedContentTokenCount\":200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}],\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":200}],\"thoughtsTokenCount\":40},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"b2uZfSd5NeMR2ZtdZZXUbbf\"}";

static const char GEMINI_MALFORMED_SSE[] =
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":1200,\"candidatesTokenCount\":75,\"totalTokenCount\":1315,\"cachedContentTokenCount\":200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}],\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":200}],\"thoughtsTokenCount\":40},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"eOUEdyE2uHCeoVOgpdVcl6u\"}\r\n"
    "\r\n"
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" th\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":1200,\"candidatesTokenCount\":150,\"totalTokenCount\":1390,\"cachedContentTokenCount\":200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}],\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":200}],\"thoughtsTokenCount\":40},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"eOUEdyE2uHCeoVOgpdVcl6u\"}\r\n"
    "\r\n"
    "data: {not json\r\n"
    "\r\n"
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"ere\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":1200,\"candidatesTokenCount\":225,\"totalTokenCount\":1465,\"cachedContentTokenCount\":200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}],\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":200}],\"thoughtsTokenCount\":40},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"eOUEdyE2uHCeoVOgpdVcl6u\"}\r\n"
    "\r\n"
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"path\":\"README.md\"}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":1200,\"candidatesTokenCount\":300,\"totalTokenCount\":1540,\"cachedContentTokenCount\":200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}],\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":200}],\"thoughtsTokenCount\":40},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"eOUEdyE2uHCeoVOgpdVcl6u\"}\r\n"
    "\r\n";

static const char GEMINI_ARR[] =
    "[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":1200,\"candidatesTokenCount\":75,\"totalTokenCount\":1315,\"cachedContentTokenCount\":200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}],\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":200}],\"thoughtsTokenCount\":40},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"kR0pCvFraHUvzSVW9ANpQA3\"}\n"
    ",\r\n"
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" th\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":1200,\"candidatesTokenCount\":150,\"totalTokenCount\":1390,\"cachedContentTokenCount\":200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}],\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":200}],\"thoughtsTokenCount\":40},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"kR0pCvFraHUvzSVW9ANpQA3\"}\n"
    ",\r\n"
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"ere\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":1200,\"candidatesTokenCount\":225,\"totalTokenCount\":1465,\"cachedContentTokenCount\":200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}],\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":200}],\"thoughtsTokenCount\":40},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"kR0pCvFraHUvzSVW9ANpQA3\"}\n"
    ",\r\n"
    "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"path\":\"README.md\"}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":1200,\"candidatesTokenCount\":300,\"totalTokenCount\":1540,\"cachedContentTokenCount\":200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}],\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":200}],\"thoughtsTokenCount\":40},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"kR0pCvFraHUvzSVW9ANpQA3\"}\n"
    "]";

static const char GEMINI_MALFORMED_ARR[] =
    "[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":1200,\"candidatesTokenCount\":75,\"totalTokenCount\":1315,\"cachedContentTokenCount\":200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}],\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":200}],\"thoughtsTokenCount\":40},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"1l7tJH8S1KcX5McRxxpDDsU\"}\n"
    ",\r\n"
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" th\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":1200,\"candidatesTokenCount\":150,\"totalTokenCount\":1390,\"cachedContentTokenCount\":200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}],\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":200}],\"thoughtsTokenCount\":40},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"1l7tJH8S1KcX5McRxxpDDsU\"}\n"
    ",\r\n"
    "{not json\n"
    ",\r\n"
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"ere\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":1200,\"candidatesTokenCount\":225,\"totalTokenCount\":1465,\"cachedContentTokenCount\":200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}],\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":200}],\"thoughtsTokenCount\":40},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"1l7tJH8S1KcX5McRxxpDDsU\"}\n"
    ",\r\n"
    "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"path\":\"README.md\"}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":1200,\"candidatesTokenCount\":300,\"totalTokenCount\":1540,\"cachedContentTokenCount\":200,\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":1200}],\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":200}],\"thoughtsTokenCount\":40},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"1l7tJH8S1KcX5McRxxpDDsU\"}\n"
    "]";

/* ---- helpers ---- */

static void on_event(void *arg, const char *raw, size_t len)
{
    kl_usage_parser *p = arg;
    const char *ev;
    size_t evl, dl;
    char *data;
    kl_sse_fields(raw, len, &ev, &evl, &data, &dl);
    kl_usage_event(p, ev, evl, data, dl);
    free(data);
}

/* Feed an SSE body in two pieces cut at `cut`, the way the account stage
 * will: through kl_sse, event by event. */
static const struct kl_usage *sse_run(kl_arena *a, enum kl_usage_kind kind, const char *s,
                                      size_t len, size_t cut)
{
    kl_usage_parser *p = kl_usage_parser_new(a, kind);
    kl_sse sse = {0};
    kl_sse_feed(&sse, s, cut, on_event, p);
    kl_sse_feed(&sse, s + cut, len - cut, on_event, p);
    kl_sse_flush(&sse, on_event, p);
    kl_sse_free(&sse);
    return kl_usage_result(p);
}

static void expect_counts(const struct kl_usage *u, int64_t in, int64_t cr, int64_t cw, int64_t out,
                          int64_t reasoning)
{
    assert_true(u->known);
    assert_int_equal(u->input, in);
    assert_int_equal(u->cache_read, cr);
    assert_int_equal(u->cache_write, cw);
    assert_int_equal(u->output, out);
    assert_int_equal(u->reasoning, reasoning);
}

static void expect_tools(const struct kl_usage *u, int n, const char *t0, const char *t1)
{
    assert_int_equal(u->tool_calls, n);
    assert_int_equal(u->ntool_names, (size_t)n);
    if (n > 0)
        assert_string_equal(u->tool_names[0], t0);
    if (n > 1)
        assert_string_equal(u->tool_names[1], t1);
}

/* The same stream with every "event:" line removed (some proxies do). */
static char *strip_event_lines(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n + 1), *w = out;
    for (const char *p = s; *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) + 1 : strlen(p);
        if (strncmp(p, "event:", 6) != 0) {
            memcpy(w, p, l);
            w += l;
        }
        p += l;
    }
    *w = '\0';
    return out;
}

/* The same stream with every event named "message" (SSE's default name,
 * which some gateways write out), or (blank) with a blank after each name:
 * the SDKs read each event's data "type". */
static char *renamed_events(const char *s, bool blank)
{
    size_t n = strlen(s);
    char *out = malloc(2 * n + 1), *w = out;
    for (const char *p = s; *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) + 1 : strlen(p);
        if (strncmp(p, "event:", 6) == 0 && blank) {
            memcpy(w, p, l - 1);
            w += l - 1;
            w += sprintf(w, " \n");
        } else if (strncmp(p, "event:", 6) == 0) {
            w += sprintf(w, "event: message\n");
        } else {
            memcpy(w, p, l);
            w += l;
        }
        p += l;
    }
    *w = '\0';
    return out;
}

/* ---- OpenAI chat ---- */

static void chat_whole(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    kl_usage_whole(p, CHAT_JSON, strlen(CHAT_JSON));
    const struct kl_usage *u = kl_usage_result(p);
    expect_counts(u, 1000, 200, 0, 300, 40);
    expect_tools(u, 2, "get_weather", "read_file");
    assert_string_equal(u->model_served, "gpt-4o");
    assert_string_equal(u->stop_reason, "tool_calls");
    kl_arena_free(&a);
}

/* An answer without tool calls is read without a cJSON tree of the whole
 * body; it must come out exactly as the tree would have it. */
static void chat_whole_plain(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    const char *b = "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"model\":\"gpt-4o-2024-08-06\","
                    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"usage: \\\"finish_reason\\\"\"},"
                    "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":30,"
                    "\"prompt_tokens_details\":{\"cached_tokens\":20},\"completion_tokens_details\":{\"reasoning_tokens\":7}},"
                    "\"model\":\"not-this-one\"}";
    kl_usage_whole(p, b, strlen(b));
    const struct kl_usage *u = kl_usage_result(p);
    expect_counts(u, 100, 20, 0, 30, 7);
    assert_int_equal(u->tool_calls, 0);
    assert_string_equal(u->model_served, "gpt-4o-2024-08-06");     /* the first, as cJSON reads it */
    assert_string_equal(u->stop_reason, "length");
    /* an error body, an empty model, truncated text */
    kl_usage_parser *q = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    const char *e = "{\"model\":\"\",\"error\":{\"message\":\"overloaded\"}}";
    kl_usage_whole(q, e, strlen(e));
    assert_null(kl_usage_result(q)->model_served);
    assert_string_equal(kl_usage_result(q)->stop_reason, "error");
    kl_usage_parser *r = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    kl_usage_whole(r, b, 60);
    assert_false(kl_usage_result(r)->known);
    /* escaped strings are decoded; the last choice's finish reason counts;
     * cache writes come off the input */
    kl_usage_parser *t = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    const char *c = "{\"model\":\"gpt\\u002d4o\",\"choices\":[{\"finish_reason\":\"length\"},"
                    "{\"finish_reason\":\"st\\u006fp\"}],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":5,"
                    "\"prompt_tokens_details\":{\"cached_tokens\":10,\"cache_write_tokens\":15}}}";
    kl_usage_whole(t, c, strlen(c));
    expect_counts(kl_usage_result(t), 25, 10, 15, 5, 0);
    assert_string_equal(kl_usage_result(t)->model_served, "gpt-4o");
    assert_string_equal(kl_usage_result(t)->stop_reason, "stop");
    kl_arena_free(&a);
}

/* An answer that names a call, however many "_call"s come before it (or
 * the legacy function_call), is read with its calls counted; one that
 * names none in a member is read by the scanner. */
static void chat_whole_call_names(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    static const struct {
        const char *body;
        int calls;
    } cases[] = {
        {"{\"model\":\"m\",\"x_call\":1,\"y\":\"tool_call\",\"choices\":[{\"message\":{\"role\":\"assistant\","
         "\"function_call\":{\"name\":\"f\",\"arguments\":\"{}\"}},\"finish_reason\":\"function_call\"}]}", 1},
        {"{\"model\":\"m\",\"a_call\":\"_call\",\"choices\":[{\"message\":{\"role\":\"assistant\","
         "\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]},"
         "\"finish_reason\":\"tool_calls\"}]}", 1},
        {"{\"model\":\"m\",\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"tool_calls function_call\"},"
         "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2},\"z\":\"_call\"}", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
        kl_usage_whole(p, cases[i].body, strlen(cases[i].body));
        assert_int_equal(kl_usage_result(p)->tool_calls, cases[i].calls);
        assert_string_equal(kl_usage_result(p)->model_served, "m");
    }
    kl_arena_free(&a);
}

static void chat_stream_tools_every_split(void **state)
{
    (void)state;
    size_t len = strlen(CHAT_SSE);
    for (size_t cut = 0; cut <= len; cut++) {
        kl_arena a;
        kl_arena_init(&a);
        const struct kl_usage *u = sse_run(&a, KL_USAGE_OPENAI_CHAT, CHAT_SSE, len, cut);
        expect_counts(u, 1000, 200, 0, 300, 40);
        expect_tools(u, 2, "get_weather", "read_file");
        assert_string_equal(u->model_served, "gpt-4o");
        assert_string_equal(u->stop_reason, "tool_calls");
        kl_arena_free(&a);
    }
}

static void chat_stream_malformed_every_split(void **state)
{
    (void)state;
    size_t len = strlen(CHAT_MALFORMED_SSE);
    for (size_t cut = 0; cut <= len; cut++) {
        kl_arena a;
        kl_arena_init(&a);
        const struct kl_usage *u = sse_run(&a, KL_USAGE_OPENAI_CHAT, CHAT_MALFORMED_SSE, len, cut);
        expect_counts(u, 1000, 200, 0, 300, 40);
        expect_tools(u, 1, "get_weather", NULL);
        assert_string_equal(u->stop_reason, "tool_calls");
        kl_arena_free(&a);
    }
}

static void chat_stream_without_usage_is_unknown(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    const char *ev[] = {
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}",
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"the \\\"usage\\\": {x} is\"},\"finish_reason\":null}]}",
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}",
        "[DONE]",
    };
    for (size_t i = 0; i < 4; i++)
        kl_usage_event(p, NULL, 0, ev[i], strlen(ev[i]));
    const struct kl_usage *u = kl_usage_result(p);
    assert_false(u->known);
    assert_int_equal(u->input + u->output + u->cache_read, 0);
    assert_string_equal(u->model_served, "gpt-4o-2024-08-06");
    assert_string_equal(u->stop_reason, "length");
    assert_int_equal(u->tool_calls, 0);
    kl_arena_free(&a);
}

/* OpenAI's streams and ConverseStream report usage only at their end. Cut
 * short, they are taken at the prompt quotas reserved and the output their
 * deltas carried (text, call arguments; a key spelled inside text is not
 * one), or at the cap when the answer reasons out of sight. */
static void cut_streams_without_usage_are_estimated(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    /* chat: 12 bytes of text ("the \"content\": x" decoded is 16), 9 of arguments */
    const char *c1 = "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
                     "\"delta\":{\"role\":\"assistant\",\"content\":\"Hello there!\"},\"finish_reason\":null}]}";
    const char *c2 = "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
                     "\"delta\":{\"content\":\"the \\\"content\\\": x\"},\"finish_reason\":null}]}";
    const char *c3 = "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
                     "\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":"
                     "{\"name\":\"Read\",\"arguments\":\"{\\\"p\\\":1}\"}}]},\"finish_reason\":null}]}";
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    kl_usage_event(p, NULL, 0, c1, strlen(c1));
    kl_usage_event(p, NULL, 0, c2, strlen(c2));
    kl_usage_event(p, NULL, 0, c3, strlen(c3));
    assert_false(kl_usage_result(p)->known);
    kl_usage_assume_prompt(p, 500, false);
    kl_usage_settle(p, 3, 1000, false);
    const struct kl_usage *u = kl_usage_result(p);
    assert_true(u->partial);
    expect_counts(u, 500, 0, 0, 12, 0); /* 12 + 16 + 7 ({"p":1}) = 35 bytes at 3 */
    /* asked to reason: what it bills is out of sight, so the cap */
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    kl_usage_event(p, NULL, 0, c1, strlen(c1));
    kl_usage_assume_prompt(p, 500, true);
    kl_usage_settle(p, 3, 1000, false);
    expect_counts(kl_usage_result(p), 500, 0, 0, 1000, 0);
    /* a stream whose usage came (vLLM's running counts) keeps its own */
    const char *c4 = "{\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},"
                     "\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":1}}";
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    kl_usage_event(p, NULL, 0, c4, strlen(c4));
    kl_usage_assume_prompt(p, 500, true);
    kl_usage_settle(p, 3, 0, false);
    expect_counts(kl_usage_result(p), 7, 0, 0, 1, 0);

    /* Responses: the text of .delta events, not audio's base64; named or not */
    const char *r1 = "{\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,"
                     "\"content_index\":0,\"delta\":\"Hello there, friend\"}";                   /* 19 */
    const char *r2 = "{\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_1\",\"output_index\":1,"
                     "\"delta\":\"{\\\"path\\\":\"}";                                              /* 8 */
    const char *r3 = "{\"type\":\"response.audio.delta\",\"delta\":\"UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAA=\"}";
    const char *names[] = {"response.output_text.delta", "response.function_call_arguments.delta",
                           "response.audio.delta"};
    const char *evs[] = {r1, r2, r3};
    for (int named = 0; named < 2; named++) {
        p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
        for (int i = 0; i < 3; i++)
            kl_usage_event(p, named ? names[i] : NULL, named ? strlen(names[i]) : 0, evs[i], strlen(evs[i]));
        kl_usage_assume_prompt(p, 40, false);
        kl_usage_settle(p, 3, 0, false);
        expect_counts(kl_usage_result(p), 40, 0, 0, 9, 0); /* 27 bytes at 3 */
    }
    /* a reasoning item, summary shown or not: the cap */
    const char *ri = "{\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"id\":\"rs_1\","
                     "\"type\":\"reasoning\",\"summary\":[]}}";
    for (int named = 0; named < 2; named++) {
        p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
        kl_usage_event(p, named ? "response.output_item.added" : NULL, named ? 26 : 0, ri, strlen(ri));
        kl_usage_assume_prompt(p, 40, false);
        kl_usage_settle(p, 3, 700, false);
        expect_counts(kl_usage_result(p), 40, 0, 0, 700, 0);
    }

    /* ConverseStream: a contentBlockDelta's text and tool input; reasoning at the cap */
    const char *v1 = "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hello there\"}}";                   /* 11 */
    const char *v2 = "{\"contentBlockIndex\":1,\"delta\":{\"toolUse\":{\"input\":\"{\\\"a\\\":2}\"}}}";  /* 7 */
    const char *v3 = "{\"contentBlockIndex\":0,\"delta\":{\"reasoningContent\":{\"text\":\"hmm\"}}}";
    p = kl_usage_parser_new(&a, KL_USAGE_BEDROCK_CONVERSE);
    kl_usage_event(p, "contentBlockDelta", 17, v1, strlen(v1));
    kl_usage_event(p, "contentBlockDelta", 17, v2, strlen(v2));
    kl_usage_assume_prompt(p, 40, false);
    kl_usage_settle(p, 2, 100, false);
    expect_counts(kl_usage_result(p), 40, 0, 0, 9, 0);
    p = kl_usage_parser_new(&a, KL_USAGE_BEDROCK_CONVERSE);
    kl_usage_event(p, "contentBlockDelta", 17, v3, strlen(v3));
    kl_usage_assume_prompt(p, 40, false);
    kl_usage_settle(p, 2, 100, false);
    expect_counts(kl_usage_result(p), 40, 0, 0, 100, 0);

    /* dialects that report as they go are not touched: Anthropic's
     * message_start says the input exactly */
    const char *start = "{\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\","
                        "\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}";
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_event(p, "message_start", 13, start, strlen(start));
    kl_usage_assume_prompt(p, 500, false);
    kl_usage_settle(p, 3, 0, false);
    expect_counts(kl_usage_result(p), 12, 0, 0, 1, 0);
    p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    kl_usage_assume_prompt(p, 500, false);
    assert_false(kl_usage_result(p)->known);
    kl_arena_free(&a);
}

/* Chunks without tool calls are read by the byte scanner, not a cJSON tree:
 * the model, the finish reason (after a text delta holding escapes and the
 * word "usage"), and usage with cached tokens from the last chunk. */
static void chat_stream_scanned(void **state)
{
    (void)state;
    const char *ev[] = {
        "{\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a \\\"usage\\\": {\\n\"},\"finish_reason\":null}],\"usage\":null}",
        "{\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}",
        "{\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":20}}}",
        "[DONE]",
    };
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    for (size_t i = 0; i < 4; i++)
        kl_usage_event(p, NULL, 0, ev[i], strlen(ev[i]));
    const struct kl_usage *u = kl_usage_result(p);
    expect_counts(u, 30, 20, 0, 7, 0);
    assert_string_equal(u->model_served, "gpt-4o-2024-08-06");
    assert_string_equal(u->stop_reason, "stop");
    assert_int_equal(u->tool_calls, 0);
    kl_arena_free(&a);
}

/* Names and values written with \u escapes ("usag\u0065") are read like
 * plain ones in every dialect, outside strict mode too: the byte filters
 * that skip uninteresting events must not skip these. */
static void escaped_words_are_read(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    const char *chat[] = {
        "{\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_c\\u0061lls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"n\\u0061me\":\"Bash\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}",
        "{\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_re\\u0061son\":\"tool_calls\"}]}",
        "{\"model\":\"gpt-4o\",\"choices\":[],\"usag\\u0065\":{\"prompt_tokens\":5,\"completion_tokens\":3}}",
    };
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    for (size_t i = 0; i < 3; i++)
        kl_usage_event(p, NULL, 0, chat[i], strlen(chat[i]));
    const struct kl_usage *u = kl_usage_result(p);
    expect_counts(u, 5, 0, 0, 3, 0);
    expect_tools(u, 1, "Bash", NULL);
    assert_string_equal(u->stop_reason, "tool_calls");

    const char *whole = "{\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"tool_c\\u0061lls\":[{\"id\":\"x\",\"type\":\"function\",\"function\":{\"name\":\"Bash\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}";
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    kl_usage_whole(p, whole, strlen(whole));
    u = kl_usage_result(p);
    expect_counts(u, 3, 0, 0, 2, 0);
    expect_tools(u, 1, "Bash", NULL);

    /* events without SSE names (a proxy dropped the event: lines) */
    const char *msg[] = {
        "{\"type\":\"message_st\\u0061rt\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}",
        "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_\\u0075se\",\"id\":\"t\",\"name\":\"Bash\",\"input\":{}}}",
        "{\"type\":\"message_d\\u0065lta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}",
    };
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    for (size_t i = 0; i < 3; i++)
        kl_usage_event(p, NULL, 0, msg[i], strlen(msg[i]));
    u = kl_usage_result(p);
    expect_counts(u, 10, 0, 0, 9, 0);
    expect_tools(u, 1, "Bash", NULL);
    assert_string_equal(u->stop_reason, "tool_use");

    const char *gem = "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionC\\u0061ll\":{\"name\":\"Bash\",\"args\":{}}}]},\"finishR\\u0065ason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":2},\"modelVersion\":\"gemini-2.5-pro\"}";
    p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    kl_usage_event(p, NULL, 0, gem, strlen(gem));
    u = kl_usage_result(p);
    expect_counts(u, 4, 0, 0, 2, 0);
    expect_tools(u, 1, "Bash", NULL);
    assert_string_equal(u->stop_reason, "STOP");

    const char *resp = "{\"type\":\"response.complet\\u0065d\",\"response\":{\"model\":\"gpt-5\",\"status\":\"completed\",\"output\":[],\"usage\":{\"input_tokens\":4,\"output_tokens\":2}}}";
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
    kl_usage_event(p, NULL, 0, resp, strlen(resp));
    u = kl_usage_result(p);
    expect_counts(u, 4, 0, 0, 2, 0);
    assert_string_equal(u->model_served, "gpt-5");
    kl_arena_free(&a);
}

/* Parallel tool calls: names come once per index, argument deltas after;
 * a provider that repeats the name in later deltas is not double counted. */
static void chat_stream_parallel_tools(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    const char *ev[] = {
        "{\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"one\",\"arguments\":\"\"}},{\"index\":1,\"id\":\"b\",\"function\":{\"name\":\"two\",\"arguments\":\"\"}}]}}]}",
        "{\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"name\":\"two\",\"arguments\":\"{}\"}}]}}]}",
        "{\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":2,\"id\":\"c\",\"function\":{\"name\":\"three\"}}]}}]}",
        "{\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":4,\"cache_write_tokens\":3}}}",
    };
    for (size_t i = 0; i < 4; i++)
        kl_usage_event(p, "", 0, ev[i], strlen(ev[i]));
    const struct kl_usage *u = kl_usage_result(p);
    assert_int_equal(u->tool_calls, 3);
    assert_string_equal(u->tool_names[0], "one");
    assert_string_equal(u->tool_names[1], "two");
    assert_string_equal(u->tool_names[2], "three");
    /* GPT-5.6+ report cache writes inside prompt_tokens */
    expect_counts(u, 3, 4, 3, 5, 0);
    kl_arena_free(&a);
}

static void chat_clamps_negative(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    const char *b = "{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":-5,"
                    "\"prompt_tokens_details\":{\"cached_tokens\":25},\"completion_tokens_details\":null}}";
    kl_usage_whole(p, b, strlen(b));
    expect_counts(kl_usage_result(p), 0, 25, 0, 0, 0);
    kl_arena_free(&a);
}

/* GPT-5 custom (free-form) tools count like function tools. */
static void custom_tools(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    const char *chat = "{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"c\",\"type\":\"custom\","
                       "\"custom\":{\"name\":\"apply_patch\",\"input\":\"*** Begin\"}}]},\"finish_reason\":\"tool_calls\"}]}";
    kl_usage_whole(p, chat, strlen(chat));
    expect_tools(kl_usage_result(p), 1, "apply_patch", NULL);
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
    const char *added = "{\"type\":\"response.output_item.added\",\"item\":{\"type\":\"custom_tool_call\","
                        "\"name\":\"apply_patch\",\"input\":\"\"}}";
    kl_usage_event(p, "response.output_item.added", 26, added, strlen(added));
    const char *msg = "{\"type\":\"response.output_item.added\",\"item\":{\"type\":\"message\",\"content\":[]}}";
    kl_usage_event(p, "response.output_item.added", 26, msg, strlen(msg));
    expect_tools(kl_usage_result(p), 1, "apply_patch", NULL);
    kl_arena_free(&a);
}

/* ---- OpenAI Responses ---- */

/* A call is counted once, at its .added or, in a stream that sends only
 * .done (where Codex takes calls from), at its .done. */
static void responses_calls_counted_once(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
    char ev[256];
    for (int i = 0; i < 3; i++) {
        snprintf(ev, sizeof(ev), "{\"type\":\"response.output_item.done\",\"output_index\":%d,\"item\":"
                 "{\"id\":\"fc_%d\",\"type\":\"function_call\",\"call_id\":\"c%d\",\"name\":\"Read\"}}", i, i, i);
        kl_usage_event(p, "response.output_item.done", 25, ev, strlen(ev));
    }
    expect_tools(kl_usage_result(p), 3, "Read", "Read");
    /* .added then .done of one item: one call; by id when there is no index */
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
    const char *types[] = {"response.output_item.added", "response.output_item.done"};
    for (int t = 0; t < 2; t++) {
        snprintf(ev, sizeof(ev), "{\"type\":\"%s\",\"output_index\":4,\"item\":{\"id\":\"fc_4\","
                 "\"type\":\"function_call\",\"name\":\"Grep\"}}", types[t]);
        kl_usage_event(p, types[t], strlen(types[t]), ev, strlen(ev));
        snprintf(ev, sizeof(ev), "{\"type\":\"%s\",\"item\":{\"id\":\"fc_5\",\"type\":\"function_call\","
                 "\"name\":\"Read\"}}", types[t]);
        kl_usage_event(p, types[t], strlen(types[t]), ev, strlen(ev));
    }
    expect_tools(kl_usage_result(p), 2, "Grep", "Read");
    kl_arena_free(&a);
}

/* A reasoning item noted as it starts, also as Python servers write it
 * ("type": "reasoning", a blank after the colon), with or without the
 * event's name: a stream cut short then bills up to the cap. */
static void responses_reasoning_item_any_spacing(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    const char *items[] = {
        "{\"type\": \"response.output_item.added\", \"item\": {\"id\": \"rs_1\", \"type\": \"reasoning\"}}",
        "{\"type\": \"response.reasoning_summary_part.added\", \"item_id\": \"rs_1\"}",
        "{\"type\": \"response.output_item.added\", \"item\": {\"id\": \"msg_1\", \"type\": \"message\"}}",
    };
    for (int named = 0; named < 2; named++) {
        for (int i = 0; i < 3; i++) {
            if (named && i == 1)
                continue; /* a named event is known by its name */
            kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
            const char *ev = named ? "response.output_item.added" : NULL;
            kl_usage_event(p, ev, ev ? strlen(ev) : 0, items[i], strlen(items[i]));
            kl_usage_assume_prompt(p, 100, false); /* cut before any usage: the prompt as reserved */
            kl_usage_settle(p, 4, 1000, false);
            assert_int_equal(kl_usage_result(p)->output, i < 2 ? 1000 : 0);
        }
    }
    kl_arena_free(&a);
}

static void responses_whole(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
    kl_usage_whole(p, RESP_JSON, strlen(RESP_JSON));
    const struct kl_usage *u = kl_usage_result(p);
    expect_counts(u, 1000, 200, 0, 300, 40);
    expect_tools(u, 2, "get_weather", "read_file");
    assert_string_equal(u->model_served, "gpt-4o");
    assert_string_equal(u->stop_reason, "completed");
    assert_string_equal(u->response_id, "resp_4ba8ddd1c01d56b840c49fda32eacc687aee0694c3f58efa");
    assert_null(u->conversation_id);
    kl_arena_free(&a);
    /* a response in a conversation names it; an id too long to be one is not remembered */
    static const char conv[] = "{\"id\":\"resp_1\",\"object\":\"response\",\"conversation\":{\"id\":\"conv_9\"},"
                               "\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}";
    kl_arena_init(&a);
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
    kl_usage_whole(p, conv, strlen(conv));
    u = kl_usage_result(p);
    assert_string_equal(u->response_id, "resp_1");
    assert_string_equal(u->conversation_id, "conv_9");
    kl_arena_free(&a);
    char longid[400];
    int n = snprintf(longid, sizeof(longid), "{\"id\":\"resp_%0300d\",\"usage\":{\"input_tokens\":5}}", 0);
    kl_arena_init(&a);
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
    kl_usage_whole(p, longid, (size_t)n);
    assert_null(kl_usage_result(p)->response_id);
    kl_arena_free(&a);
}

static void responses_stream_every_split(void **state)
{
    (void)state;
    char *nameless = strip_event_lines(RESP_MALFORMED_SSE);
    char *generic = renamed_events(RESP_MALFORMED_SSE, false), *blank = renamed_events(RESP_MALFORMED_SSE, true);
    const char *variants[] = {RESP_MALFORMED_SSE, nameless, generic, blank};
    for (int v = 0; v < 4; v++) {
        size_t len = strlen(variants[v]);
        for (size_t cut = 0; cut <= len; cut += v ? 7 : 1) {
            kl_arena a;
            kl_arena_init(&a);
            const struct kl_usage *u = sse_run(&a, KL_USAGE_OPENAI_RESPONSES, variants[v], len, cut);
            expect_counts(u, 1000, 200, 0, 300, 40);
            expect_tools(u, 1, "get_weather", NULL);
            assert_string_equal(u->model_served, "gpt-4o");
            assert_string_equal(u->stop_reason, "completed");
            assert_string_equal(u->response_id, "resp_381e32d35e99e41098a9d593631ff10574831b7cbc63c06f");
            kl_arena_free(&a);
        }
    }
    free(nameless);
    free(generic);
    free(blank);
}

/* Mid-stream: the tool is known from output_item.added before usage. */
static void responses_running_totals(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
    const char *added = "{\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":"
                        "{\"id\":\"fc_1\",\"type\":\"function_call\",\"name\":\"shell\",\"arguments\":\"\"}}";
    kl_usage_event(p, "response.output_item.added", 26, added, strlen(added));
    const struct kl_usage *u = kl_usage_result(p);
    assert_false(u->known);
    expect_tools(u, 1, "shell", NULL);
    /* the final response lists the same call: counted once */
    const char *inc = "{\"type\":\"response.incomplete\",\"response\":{\"model\":\"gpt-5.4\",\"status\":\"incomplete\","
                      "\"incomplete_details\":{\"reason\":\"max_output_tokens\"},"
                      "\"output\":[{\"type\":\"reasoning\"},{\"type\":\"function_call\",\"name\":\"shell\"}],"
                      "\"usage\":{\"input_tokens\":50,\"input_tokens_details\":{\"cached_tokens\":0},"
                      "\"output_tokens\":64,\"output_tokens_details\":{\"reasoning_tokens\":60}}}}";
    kl_usage_event(p, "response.incomplete", 19, inc, strlen(inc));
    expect_counts(u, 50, 0, 0, 64, 60);
    expect_tools(u, 1, "shell", NULL);
    assert_string_equal(u->stop_reason, "max_output_tokens");
    assert_string_equal(u->model_served, "gpt-5.4");
    kl_arena_free(&a);
}

static void responses_failed_and_error(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
    const char *f = "{\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"output\":[],"
                    "\"usage\":{\"input_tokens\":7,\"output_tokens\":0}}}";
    kl_usage_event(p, NULL, 0, f, strlen(f));
    expect_counts(kl_usage_result(p), 7, 0, 0, 0, 0);
    assert_string_equal(kl_usage_result(p)->stop_reason, "failed");
    const char *e = "{\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\"}";
    kl_usage_event(p, "error", 5, e, strlen(e));
    assert_string_equal(kl_usage_result(p)->stop_reason, "error");
    assert_int_equal(kl_usage_result(p)->input, 7);
    kl_arena_free(&a);
}

/* ---- embeddings, count_tokens ---- */

static void embeddings_whole(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_EMBEDDINGS);
    kl_usage_whole(p, EMB_JSON, strlen(EMB_JSON));
    expect_counts(kl_usage_result(p), 1200, 0, 0, 0, 0);
    assert_string_equal(kl_usage_result(p)->model_served, "text-embedding-3-small");
    kl_arena_free(&a);
}

static void count_tokens_consume_nothing(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    const char *bodies[] = {COUNT_JSON, GEMINI_COUNT_JSON};
    for (int i = 0; i < 2; i++) {
        kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_COUNT_ONLY);
        kl_usage_whole(p, bodies[i], strlen(bodies[i]));
        expect_counts(kl_usage_result(p), 0, 0, 0, 0, 0);
        assert_int_equal(kl_usage_result(p)->tool_calls, 0);
    }
    assert_int_equal(kl_usage_kind_for(KL_EP_COUNT_TOKENS), KL_USAGE_COUNT_ONLY);
    assert_int_equal(kl_usage_kind_for(KL_EP_GEMINI_COUNT), KL_USAGE_COUNT_ONLY);
    assert_int_equal(kl_usage_kind_for(KL_EP_GEMINI_STREAM), KL_USAGE_GEMINI);
    assert_int_equal(kl_usage_kind_for(KL_EP_MESSAGES), KL_USAGE_ANTHROPIC);
    assert_int_equal(kl_usage_kind_for(KL_EP_CHAT), KL_USAGE_OPENAI_CHAT);
    assert_int_equal(kl_usage_kind_for(KL_EP_RESPONSES), KL_USAGE_OPENAI_RESPONSES);
    assert_int_equal(kl_usage_kind_for(KL_EP_EMBEDDINGS), KL_USAGE_OPENAI_EMBEDDINGS);
    assert_int_equal(kl_usage_kind_for(KL_EP_MODELS), -1);
    kl_arena_free(&a);
}

/* ---- Anthropic ---- */

static void anthropic_whole(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_whole(p, MSG_JSON, strlen(MSG_JSON));
    const struct kl_usage *u = kl_usage_result(p);
    expect_counts(u, 1200, 200, 50, 300, 0);
    expect_tools(u, 2, "get_weather", "read_file");
    assert_string_equal(u->model_served, "claude-sonnet-4-5");
    assert_string_equal(u->stop_reason, "tool_use");
    kl_arena_free(&a);
}

static void anthropic_stream_every_split(void **state)
{
    (void)state;
    char *nameless = strip_event_lines(MSG_MALFORMED_SSE);
    char *generic = renamed_events(MSG_SSE, false), *blank = renamed_events(MSG_SSE, true);
    const char *variants[] = {MSG_SSE, MSG_MALFORMED_SSE, nameless, generic, blank};
    int ntools[] = {2, 1, 1, 2, 2};
    for (int v = 0; v < 5; v++) {
        size_t len = strlen(variants[v]);
        for (size_t cut = 0; cut <= len; cut++) {
            kl_arena a;
            kl_arena_init(&a);
            const struct kl_usage *u = sse_run(&a, KL_USAGE_ANTHROPIC, variants[v], len, cut);
            expect_counts(u, 1200, 200, 50, 300, 0);
            expect_tools(u, ntools[v], "get_weather", "read_file");
            assert_string_equal(u->model_served, "claude-sonnet-4-5");
            assert_string_equal(u->stop_reason, "tool_use");
            kl_arena_free(&a);
        }
    }
    free(nameless);
    free(generic);
    free(blank);
}


/* 1-hour cache writes (cache_creation.ephemeral_1h_input_tokens) are the
 * part of cache_write priced at cache_write_1h; a count above the total is
 * clamped to it. */
static void anthropic_one_hour_cache_writes(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    const char *m = "{\"type\":\"message\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":10,"
                    "\"cache_creation_input_tokens\":1500,\"cache_read_input_tokens\":0,\"cache_creation\":"
                    "{\"ephemeral_5m_input_tokens\":500,\"ephemeral_1h_input_tokens\":1000},\"output_tokens\":5}}";
    kl_usage_whole(p, m, strlen(m));
    const struct kl_usage *u = kl_usage_result(p);
    expect_counts(u, 10, 0, 1500, 5, 0);
    assert_int_equal(u->cache_write_1h, 1000);
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    const char *bad = "{\"type\":\"message\",\"usage\":{\"input_tokens\":1,\"cache_creation_input_tokens\":7,"
                      "\"cache_creation\":{\"ephemeral_1h_input_tokens\":9},\"output_tokens\":1}}";
    kl_usage_whole(p, bad, strlen(bad));
    assert_int_equal(kl_usage_result(p)->cache_write_1h, 7);
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_whole(p, MSG_JSON, strlen(MSG_JSON));
    assert_int_equal(kl_usage_result(p)->cache_write_1h, 0);
    kl_arena_free(&a);
}

/* output_tokens in message_delta is cumulative: the last one counts, never
 * the sum; input-side fields it repeats take the larger value. */
static void anthropic_cumulative_delta(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    const char *start = "{\"type\":\"message_start\",\"message\":{\"model\":\"claude-haiku-4-5\",\"usage\":"
                        "{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":900,\"output_tokens\":1}}}";
    const char *d1 = "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":40}}";
    const char *d2 = "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":"
                     "{\"input_tokens\":15,\"cache_read_input_tokens\":null,\"output_tokens\":100}}";
    kl_usage_event(p, "message_start", 13, start, strlen(start));
    const struct kl_usage *u = kl_usage_result(p);
    expect_counts(u, 12, 900, 0, 1, 0);         /* running totals mid-stream */
    assert_null(u->stop_reason);
    kl_usage_event(p, "message_delta", 13, d1, strlen(d1));
    expect_counts(u, 12, 900, 0, 40, 0);
    kl_usage_event(p, "message_delta", 13, d2, strlen(d2));
    expect_counts(u, 15, 900, 0, 100, 0);
    assert_string_equal(u->stop_reason, "max_tokens");
    const char *err = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}";
    kl_usage_event(p, "error", 5, err, strlen(err));
    assert_string_equal(u->stop_reason, "error");
    expect_counts(u, 15, 900, 0, 100, 0);
    /* an Anthropic-compatible server (sglang) that sends zeros for the
     * input side in message_delta: message_start's counts stand */
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    const char *s2 = "{\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":"
                     "{\"input_tokens\":1500,\"cache_read_input_tokens\":700,\"cache_creation_input_tokens\":30,"
                     "\"output_tokens\":1}}}";
    const char *z = "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":"
                    "{\"input_tokens\":0,\"cache_read_input_tokens\":0,\"cache_creation_input_tokens\":0,"
                    "\"output_tokens\":42}}";
    kl_usage_event(p, "message_start", 13, s2, strlen(s2));
    kl_usage_event(p, "message_delta", 13, z, strlen(z));
    u = kl_usage_result(p);
    expect_counts(u, 1500, 700, 30, 42, 0);
    assert_true(u->known);
    kl_arena_free(&a);
}

/* A stream cut short before its final usage (the caller left, the provider
 * or keyless broke it off) keeps its running counts, marked partial; an
 * Anthropic one, whose running output is message_start's 1, has its output
 * raised to what the deltas it carried come to. A stream that reported why
 * it stopped, and a whole answer, are final and left as they are. */
static void cut_short_streams_are_partial(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    const char *start = "{\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":"
                        "{\"input_tokens\":12,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}";
    const char *text = "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
                       "\"text\":\"Hello, wor\"}}";                                  /* 10 bytes */
    const char *json = "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
                       "\"partial_json\": \"{\\\"a\\\":1,\\\"b\\\":\\\"\\u00e9\\\"}\"}}";   /* {"a":1,"b":"é"}: 16 bytes decoded */
    const char *think = "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"thinking_delta\","
                        "\"thinking\":\"hmm\"}}";                                     /* 3 bytes */
    const char *sig = "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"signature_delta\","
                      "\"signature\":\"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxhbmQgbW9yZSBieXRlcw==\"}}";
    const char *stop = "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
                       "\"usage\":{\"output_tokens\":9}}";
    const char *err = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}";

    /* the caller left after the deltas: 10 + 16 bytes, at 3 a token 9 */
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_event(p, "message_start", 13, start, strlen(start));
    kl_usage_event(p, "content_block_delta", 19, text, strlen(text));
    kl_usage_event(p, "content_block_delta", 19, json, strlen(json));
    const struct kl_usage *u = kl_usage_result(p);
    assert_false(u->final);
    kl_usage_settle(p, 3, 1000, false);
    assert_true(u->partial);
    expect_counts(u, 12, 0, 0, 9, 0);
    /* a thinking block streams a summary of what it bills: the cap (the
     * signature's bytes are no text either way) */
    const char *redacted = "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                           "{\"type\":\"redacted_thinking\",\"data\":\"EmwKAhgBEgy3va3pzix\"}}";
    const char *plain = "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                        "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}";
    for (int r = 0; r < 3; r++) {
        p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
        kl_usage_event(p, "message_start", 13, start, strlen(start));
        if (r == 0) {
            kl_usage_event(p, "content_block_delta", 19, think, strlen(think));
            kl_usage_event(p, "content_block_delta", 19, sig, strlen(sig));
            kl_usage_event(p, "content_block_delta", 19, text, strlen(text));
        } else {
            /* a caller who leaves before the summary's first delta */
            const char *b = r == 1 ? redacted : plain;
            kl_usage_event(p, r == 1 ? "content_block_start" : NULL, r == 1 ? 19 : 0, b, strlen(b));
        }
        kl_usage_settle(p, 3, 1000, false);
        expect_counts(kl_usage_result(p), 12, 0, 0, 1000, 0);
    }
    /* the same without event names (an InvokeModel stream's chunks), at 4 a token */
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_event(p, NULL, 0, start, strlen(start));
    kl_usage_event(p, NULL, 0, text, strlen(text));
    kl_usage_event(p, NULL, 0, json, strlen(json));
    kl_usage_settle(p, 4, 0, false);
    u = kl_usage_result(p);
    assert_true(u->partial);
    expect_counts(u, 12, 0, 0, 7, 0); /* 26 bytes at 4 */
    /* never past the cap the provider was held to */
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_event(p, NULL, 0, start, strlen(start));
    kl_usage_event(p, NULL, 0, text, strlen(text));
    kl_usage_event(p, NULL, 0, json, strlen(json));
    kl_usage_settle(p, 1, 5, false);
    expect_counts(kl_usage_result(p), 12, 0, 0, 5, 0);
    /* an error event is no final word either, even in a stream that then
     * ended cleanly (a provider's overloaded_error arrives in a 200) */
    for (int complete = 0; complete < 2; complete++) {
        p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
        kl_usage_event(p, "message_start", 13, start, strlen(start));
        kl_usage_event(p, "error", 5, err, strlen(err));
        kl_usage_settle(p, 3, 0, complete);
        assert_true(kl_usage_result(p)->partial);
        assert_false(kl_usage_result(p)->final);
    }
    /* message_delta with its stop reason is: the provider's count stands,
     * an error after it changes nothing */
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_event(p, "message_start", 13, start, strlen(start));
    kl_usage_event(p, "content_block_delta", 19, text, strlen(text));
    kl_usage_event(p, "message_delta", 13, stop, strlen(stop));
    kl_usage_event(p, "error", 5, err, strlen(err));
    kl_usage_settle(p, 1, 0, false);
    u = kl_usage_result(p);
    assert_true(u->final);
    assert_false(u->partial);
    expect_counts(u, 12, 0, 0, 9, 0);
    /* a whole answer is final */
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_whole(p, MSG_JSON, strlen(MSG_JSON));
    kl_usage_settle(p, 1, 0, false);
    assert_true(kl_usage_result(p)->final);
    assert_false(kl_usage_result(p)->partial);

    /* chat chunks that carry running usage (vLLM's continuous usage stats):
     * final only with the chunk that says why it stopped */
    const char *c1 = "{\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},"
                     "\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":1}}";
    const char *c2 = "{\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},"
                     "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}";
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    kl_usage_event(p, NULL, 0, c1, strlen(c1));
    assert_false(kl_usage_result(p)->final);
    kl_usage_event(p, NULL, 0, c2, strlen(c2));
    assert_true(kl_usage_result(p)->final);
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    kl_usage_event(p, NULL, 0, c1, strlen(c1));
    kl_usage_settle(p, 3, 0, false);
    assert_true(kl_usage_result(p)->partial);
    expect_counts(kl_usage_result(p), 7, 0, 0, 1, 0);
    /* a stream that ended as it should, without a stop reason (some
     * OpenAI-compatible servers send none) but with its [DONE]: final;
     * without either, the transport's word alone (a body that ends when
     * the connection closes) is not enough */
    for (int done = 0; done < 2; done++) {
        p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
        kl_usage_event(p, NULL, 0, c1, strlen(c1));
        if (done)
            kl_usage_event(p, NULL, 0, "[DONE]", 6);
        kl_usage_settle(p, 3, 0, true);
        assert_int_equal(kl_usage_result(p)->final, done);
        assert_int_equal(kl_usage_result(p)->partial, !done);
    }
    /* Anthropic's message_stop is its end */
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_event(p, NULL, 0, start, strlen(start));
    kl_usage_event(p, NULL, 0, "{\"type\":\"message_stop\"}", 23);
    kl_usage_settle(p, 3, 0, true);
    assert_true(kl_usage_result(p)->final);

    /* Gemini reports usage in every chunk: cut before finishReason, the
     * running counts stand, partial; the whole stream is final */
    p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    const char *g1 = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},\"index\":0}],"
                     "\"usageMetadata\":{\"promptTokenCount\":20,\"candidatesTokenCount\":4}}";
    kl_usage_event(p, NULL, 0, g1, strlen(g1));
    kl_usage_settle(p, 3, 0, false);
    assert_true(kl_usage_result(p)->partial);
    expect_counts(kl_usage_result(p), 20, 0, 0, 4, 0);
    /* ... but the API itself counts the output only in the last chunk: cut
     * before it, at least what the parts carried (text, thoughts, a call's
     * arguments as written; names, roles and keys are no output), within
     * the cap */
    const char *g2 = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hello th\\u00e9re\"},"
                     "{\"thought\":true,\"text\":\"hmm\"},{\"functionCall\":{\"name\":\"read_file\","
                     "\"args\":{\"path\":\"a \\\"b\\\"\"}}}],\"role\":\"model\"},\"index\":0,"
                     "\"safetyRatings\":[{\"category\":\"HARM_CATEGORY_HATE_SPEECH\",\"probability\":\"NEGLIGIBLE\"}]}],"
                     "\"usageMetadata\":{\"promptTokenCount\":20,\"totalTokenCount\":20}}";
    /* 12 + 3 + 18 ({"path":"a \"b\""} as written) = 33 bytes: at 3 a token, 11 */
    for (int cap = 0; cap < 2; cap++) {
        p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
        kl_usage_event(p, NULL, 0, g2, strlen(g2));
        kl_usage_settle(p, 3, cap ? 5 : 0, false);
        assert_true(kl_usage_result(p)->partial);
        expect_counts(kl_usage_result(p), 20, 0, 0, cap ? 5 : 11, 0);
    }
    /* a chunk whose usageMetadata has no count at all (Vertex's trafficType
     * alone) tells nothing: no usage known, so the reservation is charged */
    const char *g3 = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},\"index\":0}],"
                     "\"usageMetadata\":{\"trafficType\":\"ON_DEMAND\"}}";
    p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    kl_usage_event(p, NULL, 0, g3, strlen(g3));
    kl_usage_settle(p, 3, 0, false);
    assert_false(kl_usage_result(p)->known);
    /* two answers (candidateCount 2): one that stops says nothing of the
     * other still going; final once both have */
    const char *c0 = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},\"index\":0},"
                     "{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"index\":1}],"
                     "\"usageMetadata\":{\"promptTokenCount\":20,\"candidatesTokenCount\":2}}";
    const char *s0 = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\".\"}]},\"finishReason\":\"STOP\","
                     "\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":20,\"candidatesTokenCount\":3}}";
    const char *s1 = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"!\"}]},\"finishReason\":\"STOP\","
                     "\"index\":1}],\"usageMetadata\":{\"promptTokenCount\":20,\"candidatesTokenCount\":9}}";
    p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    kl_usage_event(p, NULL, 0, c0, strlen(c0));
    kl_usage_event(p, NULL, 0, s0, strlen(s0));
    assert_false(kl_usage_result(p)->final);
    kl_usage_event(p, NULL, 0, s1, strlen(s1));
    assert_true(kl_usage_result(p)->final);
    expect_counts(kl_usage_result(p), 20, 0, 0, 9, 0);
    kl_arena_free(&a);
    kl_arena_init(&a);
    u = sse_run(&a, KL_USAGE_GEMINI, GEMINI_MALFORMED_SSE, strlen(GEMINI_MALFORMED_SSE), 0);
    assert_true(u->final);
    kl_arena_free(&a);
}

/* ---- Gemini ---- */

static void gemini_whole(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    kl_usage_whole(p, GEMINI_JSON, strlen(GEMINI_JSON));
    const struct kl_usage *u = kl_usage_result(p);
    expect_counts(u, 1000, 200, 0, 340, 40);
    expect_tools(u, 2, "get_weather", "read_file");
    assert_string_equal(u->model_served, "gemini-2.5-pro");
    assert_string_equal(u->stop_reason, "STOP");
    kl_arena_free(&a);
}

static void gemini_sse_every_split(void **state)
{
    (void)state;
    size_t len = strlen(GEMINI_MALFORMED_SSE);
    for (size_t cut = 0; cut <= len; cut++) {
        kl_arena a;
        kl_arena_init(&a);
        const struct kl_usage *u = sse_run(&a, KL_USAGE_GEMINI, GEMINI_MALFORMED_SSE, len, cut);
        expect_counts(u, 1000, 200, 0, 340, 40);
        expect_tools(u, 1, "get_weather", NULL);
        assert_string_equal(u->model_served, "gemini-2.5-pro");
        assert_string_equal(u->stop_reason, "STOP");
        kl_arena_free(&a);
    }
}

static void expect_gemini_final(const struct kl_usage *u)
{
    expect_counts(u, 1000, 200, 0, 340, 40);
    expect_tools(u, 1, "get_weather", NULL);
    assert_string_equal(u->model_served, "gemini-2.5-pro");
    assert_string_equal(u->stop_reason, "STOP");
}

static void gemini_array_every_split(void **state)
{
    (void)state;
    const char *variants[] = {GEMINI_ARR, GEMINI_MALFORMED_ARR};
    for (int v = 0; v < 2; v++) {
        const char *s = variants[v];
        size_t len = strlen(s);
        for (size_t cut = 0; cut <= len; cut++) {
            kl_arena a;
            kl_arena_init(&a);
            kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
            kl_usage_array_bytes(p, s, cut);
            kl_usage_array_bytes(p, s + cut, len - cut);
            expect_gemini_final(kl_usage_result(p));
            kl_arena_free(&a);
        }
        /* three pieces on a grid, and byte by byte */
        for (size_t i = 0; i <= len; i += 13)
            for (size_t j = i; j <= len; j += 29) {
                kl_arena a;
                kl_arena_init(&a);
                kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
                kl_usage_array_bytes(p, s, i);
                kl_usage_array_bytes(p, s + i, j - i);
                kl_usage_array_bytes(p, s + j, len - j);
                expect_gemini_final(kl_usage_result(p));
                kl_arena_free(&a);
            }
        kl_arena a;
        kl_arena_init(&a);
        kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
        for (size_t i = 0; i < len; i++)
            kl_usage_array_bytes(p, s + i, 1);
        expect_gemini_final(kl_usage_result(p));
        /* a buffered array handed over whole reads the same */
        p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
        kl_usage_whole(p, s, len);
        expect_gemini_final(kl_usage_result(p));
        kl_arena_free(&a);
    }
}

/* Running totals: after each element the usage is that element's
 * (cumulative) usageMetadata, never a sum. */
static void gemini_array_running_totals(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    const char *s = GEMINI_ARR;
    const char *second = strstr(s + 1, ",\r\n{");
    assert_non_null(second);
    kl_usage_array_bytes(p, s, (size_t)(second - s));
    const struct kl_usage *u = kl_usage_result(p);
    expect_counts(u, 1000, 200, 0, 75 + 40, 40);
    assert_null(u->stop_reason);
    kl_usage_array_bytes(p, second, strlen(second));
    expect_gemini_final(u);
    kl_arena_free(&a);
}

/* Breakage of every kind inside an element: it is skipped, the next one is
 * read. Also: a later usageMetadata that omits zero fields (proto3) resets
 * them. */
static void gemini_array_resync(void **state)
{
    (void)state;
    const char *s =
        "[{\"usageMetadata\":{\"promptTokenCount\":10,\"cachedContentTokenCount\":4,\"candidatesTokenCount\":1}}\n"
        ",\r\n{\"a\":\"unterminated\n"
        ",\r\n{\"a\":[1,2}\n"
        ",\r\n{\"a\" 1}\n"
        ",\r\n{\"a\":{\"b\":{\"c\":\"}}}}}]]]\"}}}}\n"
        ",\r\n{\"usageMetadata\":{\"promptTokenCount\":20,\"candidatesTokenCount\":5},\"modelVersion\":\"models/gemini-2.5-flash\"}\n"
        "]";
    size_t len = strlen(s);
    for (size_t cut = 0; cut <= len; cut++) {
        kl_arena a;
        kl_arena_init(&a);
        kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
        kl_usage_array_bytes(p, s, cut);
        kl_usage_array_bytes(p, s + cut, len - cut);
        const struct kl_usage *u = kl_usage_result(p);
        expect_counts(u, 20, 0, 0, 5, 0);
        assert_string_equal(u->model_served, "models/gemini-2.5-flash");
        kl_arena_free(&a);
    }
}

/* An element over KL_USAGE_MAX_ELEMENT is skipped without being kept; the
 * elements around it still count. */
static void gemini_array_huge_element(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    const char *head = "[{\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":1}}\n,\r\n"
                       "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"";
    kl_usage_array_bytes(p, head, strlen(head));
    size_t chunk = 1 << 20;
    char *x = malloc(chunk);
    memset(x, 'x', chunk);
    for (int i = 0; i < 17; i++)
        kl_usage_array_bytes(p, x, chunk);
    free(x);
    assert_true(a.total < (size_t)40 << 20);
    const char *tail = "\"}]}}],\"usageMetadata\":{\"promptTokenCount\":999}}\n,\r\n"
                       "{\"usageMetadata\":{\"promptTokenCount\":30,\"candidatesTokenCount\":7}}\n]";
    kl_usage_array_bytes(p, tail, strlen(tail));
    expect_counts(kl_usage_result(p), 30, 0, 0, 7, 0);
    kl_arena_free(&a);
}

static void gemini_tool_use_prompt_and_block(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    const char *b = "{\"promptFeedback\":{\"blockReason\":\"SAFETY\"},\"usageMetadata\":"
                    "{\"promptTokenCount\":9,\"toolUsePromptTokenCount\":4,\"totalTokenCount\":13}}";
    kl_usage_whole(p, b, strlen(b));
    expect_counts(kl_usage_result(p), 13, 0, 0, 0, 0);
    assert_string_equal(kl_usage_result(p)->stop_reason, "SAFETY");
    kl_arena_free(&a);
}

/* ---- limits and garbage ---- */

static void tool_names_capped(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    char buf[128];
    for (int i = 0; i < 70; i++) {
        int n = snprintf(buf, sizeof(buf),
                         "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":"
                         "{\"type\":\"tool_use\",\"name\":\"t%d\",\"input\":{}}}", i, i);
        kl_usage_event(p, "content_block_start", 19, buf, (size_t)n);
    }
    const struct kl_usage *u = kl_usage_result(p);
    assert_int_equal(u->tool_calls, 70);
    assert_int_equal(u->ntool_names, KL_USAGE_MAX_TOOL_NAMES);
    assert_string_equal(u->tool_names[63], "t63");
    kl_arena_free(&a);
}

/* Malformed input never crashes and never loses what was counted. */
static void garbage_keeps_counts(void **state)
{
    (void)state;
    const char *junk[] = {"", "{", "{\"usage\":", "null", "[1,2", "\"str\"", "{\"usage\":{\"prompt_tokens\":\"x\"}",
                          "{\"type\":\"message_start\",\"message\":7}", "{\"choices\":7,\"usage\":[]}",
                          "{\"usageMetadata\":", "{\"a\":1,,}", "\xff\xfe{"};
    for (int k = KL_USAGE_OPENAI_CHAT; k <= KL_USAGE_COUNT_ONLY; k++) {
        kl_arena a;
        kl_arena_init(&a);
        kl_usage_parser *p = kl_usage_parser_new(&a, (enum kl_usage_kind)k);
        const char *good = k == KL_USAGE_GEMINI ? "{\"usageMetadata\":{\"promptTokenCount\":5}}"
                         : k == KL_USAGE_ANTHROPIC ? "{\"usage\":{\"input_tokens\":5}}"
                         : k == KL_USAGE_OPENAI_RESPONSES ? "{\"usage\":{\"input_tokens\":5}}"
                         : k == KL_USAGE_BEDROCK_CONVERSE ? "{\"usage\":{\"inputTokens\":5}}"
                         : "{\"usage\":{\"prompt_tokens\":5}}";
        kl_usage_whole(p, good, strlen(good));
        for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
            kl_usage_whole(p, junk[i], strlen(junk[i]));
            kl_usage_event(p, "message_start", 13, junk[i], strlen(junk[i]));
            kl_usage_event(p, NULL, 0, junk[i], strlen(junk[i]));
            kl_usage_array_bytes(p, junk[i], strlen(junk[i]));
        }
        kl_usage_event(p, NULL, 0, NULL, 0);
        kl_usage_whole(p, NULL, 0);
        if (k != KL_USAGE_COUNT_ONLY)
            assert_int_equal(kl_usage_result(p)->input, 5);
        assert_true(kl_usage_result(p)->known);
        kl_arena_free(&a);
    }
}

static void prompt_tokens_sum(void **state)
{
    (void)state;
    struct kl_usage u = {.input = 5, .cache_read = 7, .cache_write = 11};
    assert_int_equal(kl_usage_prompt_tokens(&u), 23);
    u.input = INT64_MAX;
    assert_int_equal(kl_usage_prompt_tokens(&u), INT64_MAX);
}


/* ---- sessions ---- */

static const char *sid(kl_arena *a, const struct kl_header *h, size_t nh, const char *body,
                       const char *login)
{
    struct kl_body_map m;
    const char *dup = NULL;
    if (body) {
        size_t at;
        assert_int_equal(kl_dialect_body_map(body, strlen(body), &m, &at, &dup), 0);
        assert_null(dup);
    }
    /* the worker's fetched digest and OpenSSL's default agree */
    EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);
    assert_non_null(md);
    const char *r = kl_session_id(a, h, nh, body, body ? &m : NULL, login, md);
    const char *r2 = kl_session_id(a, h, nh, body, body ? &m : NULL, login, NULL);
    EVP_MD_free(md);
    if (r || r2)
        assert_string_equal(r, r2);
    return r;
}

static void session_from_headers(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_header h[] = {
        {"Host", "gw"},
        {"x-codex-turn-metadata", "{\"session_id\":\"codex-meta\",\"turn_id\":\"t1\"}"},
        {"X-Session-Id", "generic-1"},
        {"Session-Id", "0199a0b1-codex"},
        {"X-Claude-Code-Session-Id", "5c1b4a4e-6c52-4a0e-9a55-0c7b0d4a9f01"},
    };
    /* precedence: claude-code > session-id > x-session-id > codex metadata */
    assert_string_equal(sid(&a, h, 5, NULL, "alice"), "5c1b4a4e-6c52-4a0e-9a55-0c7b0d4a9f01");
    assert_string_equal(sid(&a, h, 4, NULL, "alice"), "0199a0b1-codex");
    assert_string_equal(sid(&a, h, 3, NULL, "alice"), "generic-1");
    assert_string_equal(sid(&a, h, 2, NULL, "alice"), "codex-meta");
    /* unusable values are skipped: spaces, control bytes, over 128 bytes */
    char longv[200];
    memset(longv, 'x', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    struct kl_header bad[] = {
        {"x-claude-code-session-id", "has space"}, {"session-id", longv}, {"x-session-id", ""},
        {"x-codex-turn-metadata", "{not json"},
    };
    assert_null(sid(&a, bad, 4, NULL, "alice"));
    longv[128] = '\0';
    struct kl_header edge[] = {{"session-id", longv}};
    assert_string_equal(sid(&a, edge, 1, NULL, NULL), longv);
    kl_arena_free(&a);
}

static void session_from_claude_metadata(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    const char *legacy = "{\"model\":\"claude-sonnet-4-5\",\"metadata\":{\"user_id\":"
                         "\"user_3f1e0c_account__session_57a121ec-f78c-48c3-a745-e3036a3ecc33\"},"
                         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    assert_string_equal(sid(&a, NULL, 0, legacy, "alice"), "57a121ec-f78c-48c3-a745-e3036a3ecc33");
    const char *json = "{\"metadata\":{\"user_id\":\"{\\\"device_id\\\":\\\"d\\\",\\\"account_uuid\\\":\\\"\\\","
                       "\\\"session_id\\\":\\\"54c1eb09-bc4c-4d2f-98eb-6d2ab2d5e2fe\\\"}\"},"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    assert_string_equal(sid(&a, NULL, 0, json, "alice"), "54c1eb09-bc4c-4d2f-98eb-6d2ab2d5e2fe");
    /* "session_" not followed by a uuid: fall through to the fingerprint */
    const char *odd = "{\"metadata\":{\"user_id\":\"user_x_session_notauuid\"},"
                      "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    const char *fp = sid(&a, NULL, 0, odd, "alice");
    assert_non_null(fp);
    assert_int_equal(strncmp(fp, "fp:", 3), 0);
    /* a header beats the body */
    struct kl_header h[] = {{"x-claude-code-session-id", "from-header"}};
    assert_string_equal(sid(&a, h, 1, legacy, "alice"), "from-header");
    kl_arena_free(&a);
}

/* Every turn of a conversation resends its first user message, so every
 * turn gets the same fingerprint; another user or another conversation
 * gets another. */
static void session_fingerprint_stable_across_turns(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    const char *turn1 = "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
                        "{\"role\":\"user\",\"content\":\"fix the build\"}]}";
    const char *turn2 = "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
                        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"fix the build\"}]},"
                        "{\"role\":\"assistant\",\"content\":\"done\"},{\"role\":\"user\",\"content\":\"thanks\"}]}";
    const char *anth = "{\"model\":\"claude-sonnet-4-5\",\"system\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":"
                       "[{\"type\":\"text\",\"text\":\"fix the build\",\"cache_control\":{\"type\":\"ephemeral\"}}]}]}";
    const char *resp_s = "{\"model\":\"gpt-5.4\",\"input\":\"fix the build\"}";
    const char *resp_a = "{\"model\":\"gpt-5.4\",\"input\":[{\"type\":\"message\",\"role\":\"developer\",\"content\":\"d\"},"
                         "{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"fix the build\"}]},"
                         "{\"type\":\"function_call_output\",\"call_id\":\"c\",\"output\":\"ok\"}]}";
    const char *gem = "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"fix the build\"}]},"
                      "{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":\"ls\"}}]}]}";
    const char *gem_norole = "{\"contents\":[{\"parts\":[{\"text\":\"fix the build\"}]}]}";
    /* the role after the content, and a message before it without text */
    const char *role_last = "{\"messages\":[{\"content\":[{\"type\":\"image\"}],\"role\":\"user\"},"
                            "{\"content\":\"fix the build\",\"role\":\"user\"}]}";
    const char *fp = sid(&a, NULL, 0, turn1, "alice@example.com");
    assert_non_null(fp);
    assert_int_equal(strlen(fp), 3 + 64);
    assert_int_equal(strncmp(fp, "fp:", 3), 0);
    const char *same[] = {turn2, anth, resp_s, resp_a, gem, gem_norole, role_last};
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
        assert_string_equal(sid(&a, NULL, 0, same[i], "alice@example.com"), fp);
    assert_string_not_equal(sid(&a, NULL, 0, turn1, "bob@example.com"), fp);
    assert_string_not_equal(sid(&a, NULL, 0, turn1, NULL), fp);
    /* only the first 4 KiB of a text count: a long message is read no further */
    char *long1 = malloc(20000), *long2 = malloc(20000);
    int n1 = snprintf(long1, 20000, "{\"messages\":[{\"role\":\"user\",\"content\":\"%0*d1\"}]}", 9000, 0);
    int n2 = snprintf(long2, 20000, "{\"messages\":[{\"role\":\"user\",\"content\":\"%0*d2\"}]}", 9000, 0);
    assert_true(n1 > 9000 && n2 > 9000);
    assert_string_equal(sid(&a, NULL, 0, long1, "alice"), sid(&a, NULL, 0, long2, "alice"));
    long2[40 + 100] = '7';
    assert_string_not_equal(sid(&a, NULL, 0, long1, "alice"), sid(&a, NULL, 0, long2, "alice"));
    free(long1);
    free(long2);
    const char *other = "{\"messages\":[{\"role\":\"user\",\"content\":\"write docs\"}]}";
    assert_string_not_equal(sid(&a, NULL, 0, other, "alice@example.com"), fp);
    kl_arena_free(&a);
}

static void session_nothing_to_fingerprint(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    assert_null(sid(&a, NULL, 0, NULL, "alice"));
    const char *none[] = {
        "{}", "[]", "{\"messages\":[]}", "{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"\"}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\",\"source\":{}}]}]}",
        "{\"input\":[{\"type\":\"function_call_output\",\"output\":\"x\"}]}", "{\"contents\":7}",
        "{\"metadata\":{\"user_id\":7},\"messages\":{\"role\":\"user\"}}",
    };
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
        if (sid(&a, NULL, 0, none[i], "alice"))
            fail_msg("fingerprinted %s", none[i]);
    kl_arena_free(&a);
}

/* ---- strict mode: what a tool policy reads ---- */

struct seen_names {
    char v[8][32];
    int n;
};

static void note_name(void *arg, const char *ns, const char *name)
{
    (void)ns;
    struct seen_names *s = arg;
    if (s->n < 8)
        snprintf(s->v[s->n++], sizeof(s->v[0]), "%s", name ? name : "(none)");
}

/* a name joined from pieces at one index, noted after the others */
static void note_joined(void *arg, const char *name)
{
    char joined[24];
    snprintf(joined, sizeof(joined), "joined:%.16s", name);
    note_name(arg, NULL, joined);
}

/* A chat parser that notes every name it checks into s (emptied). */
static kl_usage_parser *strict_chat(kl_arena *a, struct seen_names *s)
{
    s->n = 0;
    kl_usage_parser *p = kl_usage_parser_new(a, KL_USAGE_OPENAI_CHAT);
    kl_usage_on_tool(p, note_name, s);
    kl_usage_on_joined_name(p, note_joined);
    return p;
}

static void strict_event(kl_usage_parser *p, const char *ev, const char *data)
{
    kl_usage_event(p, ev, ev ? strlen(ev) : 0, data, strlen(data));
}

/* Bedrock Converse: the answer's usage and toolUse blocks; a stream's
 * events named by their :event-type. */
static void bedrock_converse(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_BEDROCK_CONVERSE);
    const char *whole = "{\"output\":{\"message\":{\"role\":\"assistant\",\"content\":[{\"text\":\"hi\"},"
                        "{\"toolUse\":{\"toolUseId\":\"t1\",\"name\":\"get_weather\",\"input\":{}}}]}},"
                        "\"stopReason\":\"tool_use\",\"usage\":{\"inputTokens\":12,\"outputTokens\":7,"
                        "\"totalTokens\":29,\"cacheReadInputTokens\":6,\"cacheWriteInputTokens\":4}}";
    kl_usage_whole(p, whole, strlen(whole));
    const struct kl_usage *u = kl_usage_result(p);
    assert_true(u->known);
    assert_int_equal(u->input, 12);
    assert_int_equal(u->output, 7);
    assert_int_equal(u->cache_read, 6);
    assert_int_equal(u->cache_write, 4);
    assert_int_equal(u->tool_calls, 1);
    assert_string_equal(u->tool_names[0], "get_weather");
    assert_string_equal(u->stop_reason, "tool_use");

    p = kl_usage_parser_new(&a, KL_USAGE_BEDROCK_CONVERSE);
    strict_event(p, "messageStart", "{\"role\":\"assistant\",\"p\":\"abc\"}");
    strict_event(p, "contentBlockDelta", "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"toolUse\"}}");
    strict_event(p, "contentBlockStart", "{\"contentBlockIndex\":1,\"start\":{\"toolUse\":{\"toolUseId\":\"t\",\"name\":\"ls\"}}}");
    strict_event(p, "messageStop", "{\"stopReason\":\"tool_use\"}");
    assert_false(kl_usage_result(p)->known);
    strict_event(p, "metadata", "{\"usage\":{\"inputTokens\":3,\"outputTokens\":4,\"totalTokens\":7},\"metrics\":{}}");
    u = kl_usage_result(p);
    assert_true(u->known);
    assert_int_equal(u->input, 3);
    assert_int_equal(u->output, 4);
    assert_int_equal(u->tool_calls, 1);
    assert_string_equal(u->tool_names[0], "ls");
    assert_string_equal(u->stop_reason, "tool_use");
    strict_event(p, "throttlingException", "{\"message\":\"slow\"}");
    assert_string_equal(kl_usage_result(p)->stop_reason, "error");
    /* the cache writes made for an hour */
    p = kl_usage_parser_new(&a, KL_USAGE_BEDROCK_CONVERSE);
    strict_event(p, "metadata", "{\"usage\":{\"inputTokens\":10,\"outputTokens\":2,\"cacheWriteInputTokens\":1000,"
                 "\"cacheDetails\":[{\"ttl\":\"1h\",\"inputTokens\":600},{\"ttl\":\"5m\",\"inputTokens\":400}]}}");
    assert_int_equal(kl_usage_result(p)->cache_write, 1000);
    assert_int_equal(kl_usage_result(p)->cache_write_1h, 600);
    kl_arena_free(&a);
}

/* Bedrock InvokeModel: Anthropic's usage when the body has it; otherwise
 * Bedrock's own counts (the stream's invocationMetrics, the headers). */
static void bedrock_invoke_counts(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_bedrock(p);
    strict_event(p, NULL, "{\"type\":\"message_start\",\"message\":{\"model\":\"claude-haiku-4-5\",\"usage\":"
                "{\"input_tokens\":10,\"output_tokens\":1}}}");
    strict_event(p, NULL, "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}");
    strict_event(p, NULL, "{\"type\":\"message_stop\",\"amazon-bedrock-invocationMetrics\":{\"inputTokenCount\":99,"
                "\"outputTokenCount\":99}}");
    kl_usage_counts(p, 77, 77, 0, 0);
    assert_int_equal(kl_usage_result(p)->input, 10);
    assert_int_equal(kl_usage_result(p)->output, 9);

    /* a model family whose events carry no Anthropic usage (Llama): its
     * last chunk has Bedrock's counts, and no "type" */
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_bedrock(p);
    strict_event(p, NULL, "{\"generation\":\"hi\",\"stop_reason\":null}");
    assert_false(kl_usage_result(p)->known);
    strict_event(p, NULL, "{\"generation\":\"\",\"stop_reason\":\"stop\",\"amazon-bedrock-invocationMetrics\":"
                "{\"inputTokenCount\":21,\"outputTokenCount\":8,\"cacheReadInputTokenCount\":2}}");
    assert_true(kl_usage_result(p)->known);
    assert_int_equal(kl_usage_result(p)->input, 21);
    assert_int_equal(kl_usage_result(p)->output, 8);
    assert_int_equal(kl_usage_result(p)->cache_read, 2);

    /* Nova's answer has a "usage" of its own shape: not Anthropic's zeros */
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_bedrock(p);
    const char *nova = "{\"output\":{\"message\":{}},\"usage\":{\"inputTokens\":31,\"outputTokens\":12}}";
    kl_usage_whole(p, nova, strlen(nova));
    assert_false(kl_usage_result(p)->known);
    kl_usage_counts(p, 31, 12, 0, 0);
    assert_int_equal(kl_usage_result(p)->input, 31);
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_bedrock(p);
    kl_usage_whole(p, "{\"generation\":\"hi\"}", 17);
    assert_false(kl_usage_result(p)->known);
    kl_usage_counts(p, 5, 6, 1, 2);
    assert_true(kl_usage_result(p)->known);
    assert_int_equal(kl_usage_result(p)->output, 6);
    assert_int_equal(kl_usage_result(p)->cache_write, 2);
    /* Anthropic's own API (and servers that copy it) keep their meaning: an
     * empty "usage" is a known zero, and no Bedrock numbers are read */
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    kl_usage_whole(p, "{\"usage\":{}}", 12);
    assert_true(kl_usage_result(p)->known);
    assert_int_equal(kl_usage_result(p)->input, 0);
    p = kl_usage_parser_new(&a, KL_USAGE_ANTHROPIC);
    strict_event(p, NULL, "{\"amazon-bedrock-invocationMetrics\":{\"inputTokenCount\":21}}");
    assert_false(kl_usage_result(p)->known);
    kl_arena_free(&a);
}

static void strict_mode(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct seen_names s = {0};
    /* the event name says text, the data says a call: the data counts, and
     * the call is met again when its item is done */
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
    kl_usage_on_tool(p, note_name, &s);
    strict_event(p, "response.output_text.delta",
                 "{\"type\":\"response.output_item.added\",\"output_index\":0,"
                 "\"item\":{\"type\":\"function_call\",\"name\":\"Bash\"}}");
    strict_event(p, "response.output_item.done",
                 "{\"type\":\"response.output_item.done\",\"output_index\":0,\"item\":{\"type\":\"local_shell_call\"}}");
    assert_int_equal(kl_usage_result(p)->tool_calls, 1);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.v[0], "Bash");
    assert_string_equal(s.v[1], "local_shell");
    assert_null(kl_usage_ambiguity(p));
    /* a duplicate key: not read, and said */
    strict_event(p, NULL, "{\"type\":\"response.output_item.added\",\"type\":\"x\"}");
    assert_non_null(strstr(kl_usage_ambiguity(p), "duplicate key"));

    /* three calls, each its own item with its own id, all at output_index 0:
     * three calls (the SDKs keep each item added), each counted as it starts;
     * an item's .done with its id again is the same call */
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_RESPONSES);
    for (int i = 0; i < 3; i++) {
        char ev[160];
        snprintf(ev, sizeof(ev), "{\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"id\":\"fc_%d\","
                 "\"type\":\"function_call\",\"name\":\"Read\"}}", i);
        strict_event(p, "response.output_item.added", ev);
        assert_int_equal(kl_usage_result(p)->tool_calls, i + 1);
    }
    strict_event(p, "response.output_item.done", "{\"type\":\"response.output_item.done\",\"output_index\":0,"
                 "\"item\":{\"id\":\"fc_2\",\"type\":\"function_call\",\"name\":\"Read\"}}");
    assert_int_equal(kl_usage_result(p)->tool_calls, 3);

    /* chat: an escaped key is read like any other; a name sent in pieces is ambiguous */
    s.n = 0;
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    kl_usage_on_tool(p, note_name, &s);
    strict_event(p, NULL, "{\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{}}]}");
    strict_event(p, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
                          "\"function\":{\"\\u006eame\":\"Ba\"}}]}}]}");
    assert_int_equal(s.n, 1);
    assert_string_equal(s.v[0], "Ba");
    assert_null(kl_usage_ambiguity(p));
    strict_event(p, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
                          "\"function\":{\"name\":\"sh\"}}]}}]}");
    assert_non_null(strstr(kl_usage_ambiguity(p), "in pieces"));
    /* a chunk is read in full when a name is escaped, even one that only
     * spells tool_calls with an escape; text escapes alone do not matter */
    s.n = 0;
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    kl_usage_on_tool(p, note_name, &s);
    strict_event(p, NULL, "{\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\nb \\\"q\\\"\"}}]}");
    strict_event(p, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"tool\\u005fcalls\":[{\"index\":0,"
                          "\"function\":{\"name\":\"Bash\"}}]}}]}");
    assert_int_equal(s.n, 1);
    assert_string_equal(s.v[0], "Bash");
    assert_null(kl_usage_ambiguity(p));

    /* a call named both as a function and as a custom tool: each name is
     * checked, and two names are ambiguous (clients pick by type or not) */
    s.n = 0;
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    kl_usage_on_tool(p, note_name, &s);
    strict_event(p, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"type\":"
                          "\"custom\",\"function\":{\"name\":\"Read\"},\"custom\":{\"name\":\"Bash\"}}]}}]}");
    assert_int_equal(kl_usage_result(p)->tool_calls, 1);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.v[0], "Bash");
    assert_string_equal(s.v[1], "Read");
    assert_non_null(strstr(kl_usage_ambiguity(p), "both as a function and as a custom tool"));

    /* Gemini's OpenAI-compatible stream: parallel calls without an index, each with its id */
    p = strict_chat(&a, &s);
    strict_event(p, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\","
                          "\"function\":{\"name\":\"read_file\",\"arguments\":\"{}\"}}]}}]}");
    strict_event(p, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"b\",\"type\":\"function\","
                          "\"function\":{\"name\":\"grep\",\"arguments\":\"{}\"}}]}}]}");
    assert_int_equal(kl_usage_result(p)->tool_calls, 2);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.v[1], "grep");
    /* and as a Python SDK joins them by index: checked too */
    assert_string_equal(s.v[2], "joined:read_filegrep");
    assert_null(kl_usage_ambiguity(p));
    /* so a refused name spelled in two pieces with two ids is seen whole */
    p = strict_chat(&a, &s);
    strict_event(p, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\","
                          "\"function\":{\"name\":\"Ba\",\"arguments\":\"\"}}]}}]}");
    strict_event(p, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_b\","
                          "\"function\":{\"name\":\"sh\",\"arguments\":\"{}\"}}]}}]}");
    assert_int_equal(s.n, 3);
    assert_string_equal(s.v[2], "joined:Bash");

    /* a name in pieces that repeats the call's id is still in pieces (Python's
     * SDK joins "Ba" + "sh" by index), and so is one whose first piece had no
     * id; a new id after an id is a new call (below) */
    const char *pieces[][2] = {
        {"{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"Ba\"}}]}}]}",
         "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"sh\"}}]}}]}"},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"Ba\"}}]}}]}",
         "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c2\",\"function\":{\"name\":\"sh\"}}]}}]}"},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"c1\",\"function\":{\"name\":\"Ba\"}}]}}]}",
         "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"c1\",\"function\":{\"name\":\"sh\"}}]}}]}"},
        /* the legacy function_call: a later chunk's name replaces the first in Node's SDK */
        {"{\"choices\":[{\"index\":0,\"delta\":{\"function_call\":{\"name\":\"Read\",\"arguments\":\"\"}}}]}",
         "{\"choices\":[{\"index\":0,\"delta\":{\"function_call\":{\"name\":\"Bash\",\"arguments\":\"{}\"}}}]}"},
    };
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
        kl_usage_on_tool(p, note_name, &s);
        strict_event(p, NULL, pieces[i][0]);
        assert_null(kl_usage_ambiguity(p));
        strict_event(p, NULL, pieces[i][1]);
        assert_non_null(kl_usage_ambiguity(p));
        assert_non_null(strstr(kl_usage_ambiguity(p), "in pieces"));
    }

    /* Ollama's parallel calls: each whole, each with its own id, all at index 0 */
    p = strict_chat(&a, &s);
    strict_event(p, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\","
                          "\"type\":\"function\",\"function\":{\"name\":\"file_write\",\"arguments\":\"{}\"}}]}}]}");
    strict_event(p, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_b\","
                          "\"type\":\"function\",\"function\":{\"name\":\"file_write\",\"arguments\":\"{}\"}}]}}]}");
    assert_int_equal(kl_usage_result(p)->tool_calls, 2);
    assert_null(kl_usage_ambiguity(p));

    /* many calls, each in its own slot (the set of slots grows), and a slot named again */
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    for (int i = 0; i < 20000; i++) {
        char ev[160];
        snprintf(ev, sizeof(ev), "{\"choices\":[{\"index\":%d,\"delta\":{\"tool_calls\":[{\"index\":%d,"
                 "\"function\":{\"name\":\"f\"}}]}}]}", i % 3, i);
        strict_event(p, NULL, ev);
    }
    strict_event(p, NULL, "{\"choices\":[{\"index\":1,\"delta\":{\"tool_calls\":[{\"index\":7,\"function\":{\"arguments\":\"{}\"}}]}}]}");
    assert_int_equal(kl_usage_result(p)->tool_calls, 20000);

    /* a whole chat answer that is not JSON, and Gemini's snake_case call */
    p = kl_usage_parser_new(&a, KL_USAGE_OPENAI_CHAT);
    kl_usage_on_tool(p, note_name, &s);
    kl_usage_whole(p, "{\"choices\":[", 12);
    assert_non_null(kl_usage_ambiguity(p));
    s.n = 0;
    p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    kl_usage_on_tool(p, note_name, &s);
    strict_event(p, NULL, "{\"candidates\":[{\"content\":{\"parts\":[{\"function_call\":{\"name\":\"Bash\"}}]}}]}");
    assert_int_equal(s.n, 1);
    assert_string_equal(s.v[0], "Bash");
    /* an escaped key the byte scanner would not match is read from the tree */
    strict_event(p, NULL, "{\"c\\u0061ndidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"Rm\"}}]}}]}");
    assert_int_equal(s.n, 2);
    assert_string_equal(s.v[1], "Rm");

    /* an array stream: what waits is the element not yet complete, across pieces */
    p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    kl_usage_on_tool(p, note_name, &s);
    const char *arr = "[{\"candidates\":[]}\r\n,{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]}}]}]";
    const char *second = strstr(arr, ",{") + 1;
    size_t cut = (size_t)(second - arr) + 5; /* inside the second element */
    kl_usage_array_bytes(p, arr, 3);
    assert_int_equal(kl_usage_array_pending(p), 2);     /* "{\"" */
    kl_usage_array_bytes(p, arr + 3, cut - 3);
    assert_int_equal(kl_usage_array_pending(p), 5);     /* the first is done; 5 bytes of the second */
    kl_usage_array_bytes(p, arr + cut, 10);
    assert_int_equal(kl_usage_array_pending(p), 15);
    kl_usage_array_bytes(p, arr + cut + 10, strlen(arr) - cut - 10);
    assert_int_equal(kl_usage_array_pending(p), 0);
    assert_null(kl_usage_ambiguity(p));
    kl_arena_free(&a);
}

/* kl_usage.answered: whether a stream carried any of an answer before it
 * ended (an error event alone, or an opening and an error, is not one). */
/* Vertex's streamFunctionCallArguments: one call's name (willContinue),
 * its arguments in pieces, an empty functionCall last: one call, checked
 * by its name, in strict mode or not; a call named after it is another. */
static void gemini_streamed_call_arguments(void **state)
{
    (void)state;
    static const char *const chunks[] = {
        "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionCall\":"
        "{\"name\":\"get_weather\",\"willContinue\":true}}]},\"index\":0}]}",
        "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"partialArgs\":"
        "[{\"jsonPath\":\"$.location\",\"stringValue\":\"Boston\",\"willContinue\":true}],\"willContinue\":true}}]}}]}",
        "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"partialArgs\":"
        "[{\"jsonPath\":\"$.location\",\"stringValue\":\", MA\"}],\"willContinue\":true}}]},\"index\":0}]}",
        "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionCall\":{}}]},\"index\":0}]}",
        "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":\"lookup\",\"args\":{}}}]},"
        "\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":100,\"candidatesTokenCount\":20}}",
    };
    for (int strict = 0; strict < 2; strict++) {
        kl_arena a;
        kl_arena_init(&a);
        kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
        struct seen_names seen = {0};
        if (strict)
            kl_usage_on_tool(p, note_name, &seen);
        for (size_t i = 0; i < 4; i++)
            kl_usage_event(p, NULL, 0, chunks[i], strlen(chunks[i]));
        expect_tools(kl_usage_result(p), 1, "get_weather", NULL);
        assert_int_equal(kl_usage_result(p)->tool_calls_one_answer, 1);
        kl_usage_event(p, NULL, 0, chunks[4], strlen(chunks[4]));
        expect_tools(kl_usage_result(p), 2, "get_weather", "lookup");
        expect_counts(kl_usage_result(p), 100, 0, 0, 20, 0);
        if (strict) {
            assert_int_equal(seen.n, 2);
            assert_string_equal(seen.v[0], "get_weather");
            assert_string_equal(seen.v[1], "lookup");
            assert_null(kl_usage_ambiguity(p));
        }
        kl_arena_free(&a);
    }
    /* a nameless call with none begun before is still a call (checked as one without a name) */
    kl_arena a;
    kl_arena_init(&a);
    kl_usage_parser *p = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    kl_usage_event(p, NULL, 0, chunks[1], strlen(chunks[1]));
    assert_int_equal(kl_usage_result(p)->tool_calls, 1);
    kl_arena_free(&a);
}

static void streams_say_whether_they_answered(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    static const struct {
        enum kl_usage_kind kind;
        const char *ev1, *data1, *ev2, *data2;
        bool answered;
    } cases[] = {
        {KL_USAGE_ANTHROPIC, "error", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}", NULL, NULL, false},
        {KL_USAGE_ANTHROPIC, "message_start", "{\"type\":\"message_start\",\"message\":{}}", "content_block_start",
         "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}", true},
        {KL_USAGE_OPENAI_CHAT, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}", NULL,
         "{\"error\":{\"message\":\"x\"}}", false},
        {KL_USAGE_OPENAI_CHAT, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"content\": \"Hi\"}}]}", NULL, NULL, true},
        /* Mistral's content parts (magistral's thinking, then text), then an error chunk */
        {KL_USAGE_OPENAI_CHAT, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"content\":[{\"type\":\"thinking\","
         "\"thinking\":[{\"type\":\"text\",\"text\":\"Hmm\"}]}]}}]}", NULL, "{\"error\":{\"message\":\"x\"}}", true},
        {KL_USAGE_OPENAI_CHAT, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}]}}]}",
         NULL, NULL, true},
        {KL_USAGE_OPENAI_CHAT, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
         "\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}", NULL, NULL, true},
        {KL_USAGE_OPENAI_RESPONSES, "response.created", "{\"type\":\"response.created\"}", "error", "{\"type\":\"error\"}", false},
        {KL_USAGE_OPENAI_RESPONSES, "response.output_text.delta", "{\"type\":\"response.output_text.delta\",\"delta\":\"a\"}",
         NULL, NULL, true},
        {KL_USAGE_BEDROCK_CONVERSE, "messageStart", "{\"role\":\"assistant\"}", "throttlingException", "{\"message\":\"slow\"}",
         false},
        {KL_USAGE_BEDROCK_CONVERSE, "contentBlockDelta", "{\"delta\":{\"text\":\"a\"}}", NULL, NULL, true},
    };
    /* Gemini's JSON-array stream: an element with text, then an error one */
    kl_usage_parser *g = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    const char *arr = "[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]},{\"error\":{\"code\":500}}]";
    kl_usage_array_bytes(g, arr, strlen(arr));
    assert_true(kl_usage_result(g)->answered);
    g = kl_usage_parser_new(&a, KL_USAGE_GEMINI);
    kl_usage_array_bytes(g, "[{\"error\":{\"code\":503}}]", 24);
    assert_false(kl_usage_result(g)->answered);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kl_usage_parser *p = kl_usage_parser_new(&a, cases[i].kind);
        const char *e1 = cases[i].ev1, *e2 = cases[i].ev2;
        kl_usage_event(p, e1, e1 ? strlen(e1) : 0, cases[i].data1, strlen(cases[i].data1));
        if (cases[i].data2)
            kl_usage_event(p, e2, e2 ? strlen(e2) : 0, cases[i].data2, strlen(cases[i].data2));
        if (kl_usage_result(p)->answered != cases[i].answered)
            fail_msg("case %zu: answered %d", i, kl_usage_result(p)->answered);
    }
    kl_arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chat_whole),
        cmocka_unit_test(streams_say_whether_they_answered),
        cmocka_unit_test(cut_short_streams_are_partial),
        cmocka_unit_test(chat_whole_plain),
        cmocka_unit_test(chat_whole_call_names),
        cmocka_unit_test(chat_stream_tools_every_split),
        cmocka_unit_test(chat_stream_malformed_every_split),
        cmocka_unit_test(chat_stream_without_usage_is_unknown),
        cmocka_unit_test(cut_streams_without_usage_are_estimated),
        cmocka_unit_test(chat_stream_scanned),
        cmocka_unit_test(escaped_words_are_read),
        cmocka_unit_test(chat_stream_parallel_tools),
        cmocka_unit_test(chat_clamps_negative),
        cmocka_unit_test(custom_tools),
        cmocka_unit_test(responses_calls_counted_once),
        cmocka_unit_test(responses_reasoning_item_any_spacing),
        cmocka_unit_test(responses_whole),
        cmocka_unit_test(responses_stream_every_split),
        cmocka_unit_test(responses_running_totals),
        cmocka_unit_test(responses_failed_and_error),
        cmocka_unit_test(embeddings_whole),
        cmocka_unit_test(count_tokens_consume_nothing),
        cmocka_unit_test(anthropic_whole),
        cmocka_unit_test(anthropic_stream_every_split),
        cmocka_unit_test(anthropic_cumulative_delta),
        cmocka_unit_test(anthropic_one_hour_cache_writes),
        cmocka_unit_test(gemini_whole),
        cmocka_unit_test(gemini_sse_every_split),
        cmocka_unit_test(gemini_array_every_split),
        cmocka_unit_test(gemini_array_running_totals),
        cmocka_unit_test(gemini_array_resync),
        cmocka_unit_test(gemini_array_huge_element),
        cmocka_unit_test(gemini_tool_use_prompt_and_block),
        cmocka_unit_test(gemini_streamed_call_arguments),
        cmocka_unit_test(tool_names_capped),
        cmocka_unit_test(garbage_keeps_counts),
        cmocka_unit_test(prompt_tokens_sum),
        cmocka_unit_test(session_from_headers),
        cmocka_unit_test(session_from_claude_metadata),
        cmocka_unit_test(session_fingerprint_stable_across_turns),
        cmocka_unit_test(session_nothing_to_fingerprint),
        cmocka_unit_test(strict_mode),
        cmocka_unit_test(bedrock_converse),
        cmocka_unit_test(bedrock_invoke_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
